"""Which configured executor a client's Covalent-style reference means.

A client may name an executor type instead of an executor (``executor="dask"``),
or send a descriptor of a cluster type that names a place
(``ct.executor.DaskExecutor(scheduler_address=...)``). The controller never
connects to a place a client names: it looks for the executor of that type that
its ``config.toml`` configures for that place, and when there is none, the
error shows the table the operator would add.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cobalt_common.errors import SpecError, UnsatisfiableError
from cobalt_controller._config import ExecutorConfig

_BY_NAME = ""
"""A match key compared with the configured executor's name (a Slurm login node)."""

MATCH_KEYS: Mapping[str, Mapping[str, str]] = {
    "slurm": {"address": _BY_NAME, "partition": "partition", "account": "account", "qos": "qos"},
    "dask": {"address": "address"},
    "ray": {"address": "address"},
    "ssh": {"hostname": "hosts"},
    "kubernetes": {"context": "context", "kubeconfig": "kubeconfig", "image": "image"},
}
"""Per type, each key a client may match on, and the config.toml key it is compared with."""


def parse_match(type_name: str, match_json: str) -> dict[str, str]:
    """The client's match, checked: a JSON object of text values under known keys."""
    keys = MATCH_KEYS.get(type_name)
    if keys is None:
        raise SpecError(
            f"executor type {type_name!r} cannot be matched against configured executors; "
            f"types that can: {', '.join(sorted(MATCH_KEYS))}."
        )
    try:
        match = json.loads(match_json)
    except ValueError:
        match = None
    if not isinstance(match, dict) or not all(
        isinstance(v, str) and v and "\n" not in v and len(v) <= 1024 for v in match.values()
    ):
        raise SpecError(f"a {type_name} executor match must be a JSON object of text values.")
    unknown = sorted(set(match) - set(keys))
    if unknown:
        raise SpecError(
            f"a {type_name} executor cannot be matched on {', '.join(unknown)}; "
            f"it can on: {', '.join(sorted(keys))}."
        )
    return {str(k): str(v) for k, v in match.items()}


def _address(value: str) -> str:
    """A scheduler address with its scheme: ``10.0.0.5:8786`` is ``tcp://10.0.0.5:8786``."""
    value = value.strip().rstrip("/")
    return value if "://" in value else f"tcp://{value}"


def _hosts(value: Any) -> set[str]:
    entries = value if isinstance(value, list) else []
    return {str(e.get("host", "")) for e in entries if isinstance(e, Mapping)}


def matches(cfg: ExecutorConfig, match: Mapping[str, str]) -> bool:
    """Whether ``cfg`` is the place every key of ``match`` names."""
    keys = MATCH_KEYS[cfg.type]
    for key, wanted in match.items():
        config_key = keys[key]
        if config_key == _BY_NAME:
            if wanted != cfg.name:
                return False
            continue
        have = cfg.options.get(config_key)
        if config_key == "hosts":
            if wanted not in _hosts(have):
                return False
        elif config_key == "address":
            if not isinstance(have, str) or _address(have) != _address(wanted):
                return False
        elif have != wanted:
            return False
    return True


def _toml_table(type_name: str, match: Mapping[str, str]) -> str:
    keys = MATCH_KEYS[type_name]
    name = match.get("address", "") if keys.get("address") == _BY_NAME else ""
    lines = [f"[executors.{json.dumps(name) if name else 'NAME'}]", f'type = "{type_name}"']
    for key, value in sorted(match.items()):
        config_key = keys[key]
        if config_key == _BY_NAME:
            continue
        if config_key == "hosts":
            lines.append(f"hosts = [{{ host = {json.dumps(value)} }}]")
        else:
            lines.append(f"{config_key} = {json.dumps(value)}")
    return "\n".join(lines)


def select(
    configs: Sequence[ExecutorConfig], type_name: str, match: Mapping[str, str], asked: str
) -> str:
    """The name of the one configured executor of ``type_name`` that ``match`` names.

    Raises:
        UnsatisfiableError: none or several match; the message lists the
            configured ones and shows the ``config.toml`` table to add.
    """
    of_type = [cfg for cfg in configs if cfg.type == type_name]
    found = [cfg for cfg in of_type if matches(cfg, match)]
    if len(found) == 1:
        return found[0].name
    configured = ", ".join(cfg.name for cfg in configs) or "(none)"
    if found:
        names = ", ".join(cfg.name for cfg in found)
        raise UnsatisfiableError(
            f"{asked} matches several executors of this controller ({names}); name one, "
            f'such as executor="{found[0].name}". Configured executors: {configured}.'
        )
    raise UnsatisfiableError(
        f"{asked} matches no executor of this controller; configured executors: "
        f"{configured}. The controller runs tasks only where its config.toml says, "
        "and never connects to a cluster or host a client names. Ask its operator to add "
        f"the executor to config.toml, such as:\n\n{_toml_table(type_name, match)}\n"
    )


def describe(type_name: str, match: Mapping[str, str]) -> str:
    """How the client wrote it: ``DaskExecutor(address='tcp://...')`` or ``executor="dask"``."""
    if not match:
        return f'executor="{type_name}"' if type_name else "the executor"
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(match.items()))
    return f"a {type_name} executor ({args})"
