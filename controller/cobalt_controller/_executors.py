"""The executors a controller knows: configured ones and clients' descriptors."""

from __future__ import annotations

import json
import threading
from typing import Any

from cobalt_common.errors import SpecError, UnsatisfiableError
from cobalt_common.hardware import HardwareSpec
from cobalt_controller._config import ExecutorConfig
from cobalt_executors import Executor, ExecutorContext
from cobalt_executors.registry import create_executor


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
        """The executor a task names (JSON of name/type/options), or None for "any"."""
        if not ref_json:
            return None
        ref: dict[str, Any] = json.loads(ref_json)
        name = str(ref.get("name", ""))
        type_name = str(ref.get("type", ""))
        options_json = str(ref.get("options_json", ""))
        with self._lock:
            known = self._by_name.get(name)
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
                    f"{', '.join(self._by_name) or '(none)'}. Add it to config.toml or pass "
                    "an executor instance such as ct.LocalExecutor(...)."
                )
            options = json.loads(options_json) if options_json else {}
            ex = create_executor(type_name, name, options)
            ex.setup(self._context)
            self._by_name[name] = (ex, options_json)
            return ex

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
