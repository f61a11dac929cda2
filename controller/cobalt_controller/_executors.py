"""The executors a controller knows: configured ones and clients' descriptors."""

from __future__ import annotations

import json
import threading
from typing import Any

from cobalt_common.errors import SpecError, UnsatisfiableError
from cobalt_common.executor_types import EXECUTOR_TYPES as TYPE_TABLE
from cobalt_common.executor_types import LOCAL
from cobalt_common.hardware import HardwareSpec
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_controller._config import ExecutorConfig
from cobalt_controller._executor_match import describe, parse_match, select
from cobalt_executors import Executor, ExecutorContext
from cobalt_executors.registry import EXECUTOR_TYPES, create_executor

EXECUTOR_TYPE_NAMES = frozenset(EXECUTOR_TYPES)


def ref_json(ref: pb.ExecutorRef) -> str:
    """A task's or deployment's executor reference as stored: "" for "any"."""
    if not ref.name and not ref.type:
        return ""
    fields = {"name": ref.name or ref.type, "type": ref.type, "options_json": ref.options_json}
    if ref.match_json:
        fields["match_json"] = ref.match_json
    return json.dumps(fields)


def _client_options(type_name: str, options_json: str) -> dict[str, Any]:
    """A client's descriptor options, checked here as well as in the SDK: what only
    ``config.toml`` may set (a cluster's address, SSH hosts...) is refused, so that
    no request makes the controller connect where a client says."""
    try:
        options = json.loads(options_json) if options_json else {}
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise SpecError(f"a {type_name!r} executor's options must be a JSON object.")
    kind = TYPE_TABLE.get(type_name)
    refused = sorted(set(options) - kind.client_options) if kind is not None else []
    if refused:
        raise SpecError(
            f"a client's {type_name} executor cannot set {', '.join(refused)}: only the "
            "controller's config.toml can. Name a configured executor instead, such as "
            f'executor="{type_name}".'
        )
    return options


class ExecutorPool:
    """Configured executors take tasks that name none; a descriptor sent by a
    client creates an executor once and is reused by name afterwards.

    Clients' executors are not stored: a restarted controller creates one again
    only for a dispatch or deployment that still needs it (see its recovery),
    so executors that scripts described once do not pile up across restarts.
    All local executors share the context's machine, which the configured ones
    size before any client's joins.
    """

    def __init__(self, configs: list[ExecutorConfig], context: ExecutorContext) -> None:
        self._context = context
        self.machine = context.machine
        self._lock = threading.Lock()
        self.configured: list[Executor] = []
        self._configs = list(configs)
        self._by_name: dict[str, tuple[Executor, str]] = {}
        for cfg in configs:
            ex = create_executor(cfg.type, cfg.name, cfg.options)
            ex.setup(context)
            self.configured.append(ex)
            self._by_name[cfg.name] = (ex, "")
        self.machine.close()

    def all(self) -> list[Executor]:
        with self._lock:
            return [ex for ex, _ in self._by_name.values()]

    def named(self, name: str) -> Executor | None:
        """The executor called ``name``, if this controller has it now."""
        with self._lock:
            known = self._by_name.get(name)
        return known[0] if known is not None else None

    def is_configured(self, ex: Executor) -> bool:
        return ex in self.configured

    def resolve(self, ref_json: str) -> Executor | None:
        """The executor a task names (JSON of name/type/options/match), or None for "any".

        A plain name is a configured executor's, or else an executor type's
        (``"dask"``: the sole configured one of that type); a descriptor with a
        match picks among the configured executors of its type; any other
        descriptor creates its executor once and is reused by name.
        """
        if not ref_json:
            return None
        ref: dict[str, Any] = json.loads(ref_json)
        name = str(ref.get("name", ""))
        type_name = str(ref.get("type", ""))
        options_json = str(ref.get("options_json", ""))
        match_json = str(ref.get("match_json", ""))
        if match_json:  # a Covalent-style descriptor of a cluster type
            match = parse_match(type_name, match_json)
            chosen = select(self._configs, type_name, match, describe(type_name, match))
            return self._configured(chosen)
        with self._lock:
            known = self._by_name.get(name)
            by_type = not type_name and name in EXECUTOR_TYPE_NAMES
            if by_type and (known is None or known[0] not in self.configured):
                return self._of_type(name)
            if known is not None:
                ex, known_options = known
                redefined = type_name and known_options != options_json
                if redefined and (known_options or ex not in self.configured):
                    raise SpecError(
                        f"an executor named {name!r} already exists with other options; "
                        "give this one another name."
                    )
                return ex
            if not type_name:
                raise UnsatisfiableError(
                    f"no executor named {name!r}; configured executors are: "
                    f"{', '.join(self._by_name) or '(none)'}; executor types are: "
                    f"{', '.join(sorted(EXECUTOR_TYPE_NAMES))}. Add it to config.toml or pass "
                    "an executor instance such as ct.LocalExecutor(...)."
                )
            options = _client_options(type_name, options_json)
            ex = create_executor(type_name, name, options)
            ex.setup(self._context)
            self._by_name[name] = (ex, options_json)
            return ex

    def _configured(self, name: str) -> Executor:
        with self._lock:
            return self._by_name[name][0]

    def _of_type(self, type_name: str) -> Executor:
        """``executor="dask"``: the sole configured executor of that type. For
        ``"local"`` without one such executor, the same as ``ct.LocalExecutor()``:
        a task can always run on the controller's own machine. Called locked."""
        of_type = [cfg.name for cfg in self._configs if cfg.type == type_name]
        if len(of_type) == 1:
            return self._by_name[of_type[0]][0]
        if type_name == LOCAL.name:
            described = self._by_name.get(LOCAL.name)
            if described is not None:  # a client's ct.LocalExecutor() made it already
                return described[0]
            ex = create_executor(LOCAL.name, LOCAL.name, {})
            ex.setup(self._context)
            self._by_name[LOCAL.name] = (ex, "{}")
            return ex
        return self._by_name[select(self._configs, type_name, {}, describe(type_name, {}))][0]

    def candidates(
        self, spec: HardwareSpec, named: Executor | None, task: str
    ) -> tuple[Executor, ...]:
        """Executors that could ever run ``spec``; raises when there are none."""
        pool = [named] if named is not None else self.configured
        found = tuple(ex for ex in pool if ex.can_ever_run(spec))
        if found:
            return found
        described = "; ".join(f"{ex.name} ({ex.capacity_words(spec)})" for ex in pool)
        most = max(
            (sum(1 for d in ex.inventory().gpus if d.type == spec.gpu) for ex in pool), default=0
        )
        if spec.gpu and most:
            hint = f" The most {spec.gpu} GPUs any of them has is {most}."
        elif spec.gpu:
            hint = (
                " To try GPU workflows on this machine, emulate them: "
                'executor=ct.LocalExecutor(emulate_gpus={"'
                + spec.gpu
                + '": '
                + str(spec.gpus)
                + "})."
            )
        else:
            hint = ""
        raise UnsatisfiableError(
            f"task {task!r} asks for {spec.describe()}, which no executor can ever provide. "
            f"{'Executor' if named else 'Configured executors'}: {described}.{hint}"
        )

    def teardown(self) -> None:
        for ex in self.all():
            ex.teardown()
