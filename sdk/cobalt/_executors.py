"""Executor descriptors on the client side.

An electron's ``executor=`` is either the name of an executor configured in
the controller's ``config.toml`` (or an executor type such as ``"local"``, the
controller's sole executor of that type) or one of these descriptors. A
descriptor is plain data (type, name, options): it is validated here, when it
is written, and sent to the controller as JSON; the controller instantiates the
executor. Each descriptor's type name and accepted options come from
:mod:`cobalt_common.executor_types`, the table the executors read too.

Besides what it sends, a descriptor may carry what Covalent's executor classes
set on a task (see :mod:`cobalt._executor_args`): hardware defaults, and
:class:`~cobalt._executor_args.TaskSettings` that travel with the task.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from cobalt._executor_args import TaskSettings, common, text
from cobalt_common.errors import SpecError
from cobalt_common.executor_types import LOCAL
from cobalt_common.hardware import parse_gpu_type, parse_memory_mb
from cobalt_common.pricing import parse_prices


def _canonical(value: Any) -> Any:
    """One spelling of an option's value: ``2.0`` is ``2``, tuples are lists.

    Example:
        >>> _canonical({"cpus": 2.0, "gpu_hour": {"h100": 2.50}, "sizes": (1, 2)})
        {'cpus': 2, 'gpu_hour': {'h100': 2.5}, 'sizes': [1, 2]}
    """
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Executor:
    """Base of executor descriptors: a type, a name and validated options.

    Attributes:
        defaults: what a task gets where its electron and lattice set nothing,
            as electron option names (``cpus``, ``memory`` in MB, ``gpu``,
            ``gpus``, ``time_limit`` in seconds, ``retries``).
        settings: how its tasks run on their machine (working directory, log files).
        match: for Covalent-style descriptors of a cluster type, what the client
            named (a scheduler address, a partition...): the controller picks the
            configured executor of this type that matches it. ``None`` for
            descriptors the controller instantiates.
    """

    type_name: ClassVar[str] = ""
    accepted_options: ClassVar[frozenset[str]] = frozenset()
    covalent_arguments: ClassVar[frozenset[str]] = frozenset()
    defaults: dict[str, Any]
    settings: TaskSettings
    match: dict[str, Any] | None = None

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self.defaults = {}
        self.settings = TaskSettings()
        unknown = sorted(set(options) - self.accepted_options)
        if unknown:
            raise SpecError(
                f"{type(self).__name__} does not accept option(s) {', '.join(unknown)}; "
                f"accepted options are: {', '.join(sorted(self.accepted_options))}."
            )
        self.options: dict[str, Any] = {
            k: _canonical(v) for k, v in options.items() if v is not None
        }
        self.name = name or self._derived_name()

    def _derived_name(self) -> str:
        """``type-<8 hex>`` from the options alone, so that every process, every
        run of a script and every order of writing the options names the same
        executor, and the controller reuses it instead of starting another."""
        if not self.options:
            return self.type_name
        digest = hashlib.sha256(self.options_json().encode()).hexdigest()[:8]
        return f"{self.type_name}-{digest}"

    def options_json(self) -> str:
        return json.dumps(self.options, sort_keys=True)

    def match_json(self) -> str:
        """What the controller matches configured executors against; "" for none."""
        return "" if self.match is None else json.dumps(self.match, sort_keys=True)

    def __repr__(self) -> str:
        shown = self.options if self.match is None else self.match
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items()))
        return f"{type(self).__name__}(name={self.name!r}{', ' if opts else ''}{opts})"

    def _key(self) -> tuple[Any, ...]:
        return (
            self.type_name,
            self.name,
            self.options_json(),
            self.match_json(),
            json.dumps(self.defaults, sort_keys=True),
            self.settings,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Executor) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class LocalExecutor(Executor):
    """Runs tasks in warm worker processes on the controller's machine.

    Args:
        name: the executor's name in task records (derived from the options
            when omitted).
        workers: how many warm workers to keep started (default: CPU count).
        cpus: CPU capacity to schedule against (default: the controller's
            machine's). Every local executor of a controller shares that
            machine's CPUs and memory besides keeping its own limits.
        memory: memory capacity, MB or a string such as ``"64GB"`` (default:
            the machine's). More than the machine has emulates a bigger box:
            its tasks together still take no more than the machine.
        emulate_gpus: GPUs to pretend to have, for example ``{"h100": 2}``.
            They are inventory only: tasks placed on them run on the CPU and
            are labelled emulated in every record and display.
        prices: what this machine's hardware costs: ``"zero"`` (the default:
            hardware you own), ``"list"`` (published cloud list prices) or a
            dict of overrides such as ``{"base": "list", "gpu_hour":
            {"h100": 2.1}, "cpu_core_hour": 0.05, "memory_gb_hour": 0.01}``.
            Emulated GPUs are priced as the GPUs they stand for.

    Covalent's ``LocalExecutor`` arguments (keyword only; ``name`` stays first):

    - ``workdir``: the directory its tasks run in, created when missing.
    - ``log_stdout``, ``log_stderr``: files the task's stdout and stderr are
      appended to on the machine where it ran (relative paths: from the
      task's working directory), besides its record.
    - ``time_limit`` (seconds; -1 for none) and ``retries``: defaults for
      its tasks where the electron and lattice set none.
    - ``cache_dir``, ``current_env_on_conda_fail``: accepted and unused
      (cobalt keeps no such cache; there is no conda step to fall back from).
    - ``conda_env`` and ``create_unique_workdir=True`` are refused with what
      to do instead.

    Example:
        >>> import cobalt as ct
        >>> ex = ct.LocalExecutor(emulate_gpus={"h100": 2}, memory="256GB")
        >>> ex.options["emulate_gpus"]
        {'h100': 2}
        >>> ct.executor.LocalExecutor(log_stdout="out.log").settings.log_stdout
        'out.log'
    """

    type_name = LOCAL.name
    accepted_options = LOCAL.client_options
    covalent_arguments: ClassVar[frozenset[str]] = frozenset(
        {
            "workdir",
            "create_unique_workdir",
            "log_stdout",
            "log_stderr",
            "cache_dir",
            "conda_env",
            "current_env_on_conda_fail",
            "time_limit",
            "retries",
        }
    )
    """Covalent's ``LocalExecutor`` arguments, taken besides cobalt's options."""

    def __init__(
        self,
        name: str | None = None,
        *,
        workers: int | None = None,
        cpus: float | None = None,
        memory: int | str | None = None,
        emulate_gpus: dict[str, int] | None = None,
        prices: str | dict[str, Any] | None = None,
        workdir: str | None = None,
        create_unique_workdir: bool | None = None,
        log_stdout: str | None = None,
        log_stderr: str | None = None,
        cache_dir: str | None = None,
        conda_env: str | None = None,
        current_env_on_conda_fail: bool | None = None,
        time_limit: float | None = None,
        retries: int | None = None,
        **unknown: Any,
    ) -> None:
        settings, defaults = common(
            "LocalExecutor",
            log_stdout=log_stdout,
            log_stderr=log_stderr,
            workdir=workdir,
            create_unique_workdir=create_unique_workdir,
            conda_env=conda_env,
            time_limit=time_limit,
            retries=retries,
        )
        text("LocalExecutor", "cache_dir", cache_dir)
        options: dict[str, Any] = dict(unknown)
        if workers is not None:
            if not isinstance(workers, int) or workers < 1:
                raise SpecError(
                    f"LocalExecutor workers must be a positive integer, got {workers!r}."
                )
            options["workers"] = workers
        if cpus is not None:
            if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0:
                raise SpecError(f"LocalExecutor cpus must be a positive number, got {cpus!r}.")
            options["cpus"] = cpus
        if memory is not None:
            options["memory"] = parse_memory_mb(memory, option="LocalExecutor memory")
        if emulate_gpus is not None:
            if not isinstance(emulate_gpus, dict):
                raise SpecError(
                    'LocalExecutor emulate_gpus must be a dict such as {"h100": 2}, '
                    f"got {emulate_gpus!r}."
                )
            gpus: dict[str, int] = {}
            for gpu_type, count in emulate_gpus.items():
                canonical = parse_gpu_type(gpu_type, option="LocalExecutor emulate_gpus")
                if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                    raise SpecError(
                        f"LocalExecutor emulate_gpus[{gpu_type!r}] must be a positive integer, "
                        f"got {count!r}."
                    )
                gpus[canonical] = count
            options["emulate_gpus"] = gpus
        if prices is not None:
            parse_prices(prices, where="LocalExecutor prices")
            if isinstance(prices, dict) and isinstance(prices.get("gpu_hour"), dict):
                by_type = {parse_gpu_type(str(g)): p for g, p in prices["gpu_hour"].items()}
                prices = {**prices, "gpu_hour": by_type}
            options["prices"] = prices
        super().__init__(name, **options)
        self.settings, self.defaults = settings, defaults


ExecutorLike = str | Executor
"""What ``executor=`` accepts: a configured executor's name or a descriptor."""
