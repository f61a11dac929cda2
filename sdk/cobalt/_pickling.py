"""Pickling at dispatch, with errors that name the offending object's path."""

from __future__ import annotations

import hashlib
import io
import pickle
import types
from typing import Any

import cloudpickle

from cobalt_common.errors import PicklingError

_MAX_DEPTH = 12


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(obj: Any, *, path: str, what: str) -> bytes:
    """cloudpickle bytes of ``obj``; on failure a PicklingError naming the path.

    Args:
        obj: the function or value to pickle.
        path: how the user would name it, e.g. ``"args[0]"`` of task ``train``.
        what: the phrase for the message, e.g. ``"argument of task 'train'"``.
    """
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is reported the same way
        bad_path, bad = find_unpicklable(obj, path)
        raise PicklingError(
            f"cannot pickle {what}: {bad_path} is a {type(bad).__name__} "
            f"({type(exc).__name__}: {exc}). Tasks run in other processes, so everything they "
            "receive must be picklable: create such objects inside the task, or pass what is "
            "needed to rebuild them."
        ) from None


def _picklable(obj: Any) -> bool:
    try:
        cloudpickle.dump(obj, io.BytesIO())
    except Exception:  # noqa: BLE001
        return False
    return True


def _children(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, list | tuple | set | frozenset):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, types.FunctionType):
        found: list[tuple[str, Any]] = []
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False):
            try:
                found.append((f".<closure {name}>", cell.cell_contents))
            except ValueError:
                continue
        for name in obj.__code__.co_names:
            if name in obj.__globals__ and not isinstance(obj.__globals__[name], types.ModuleType):
                found.append((f".<global {name}>", obj.__globals__[name]))
        return found
    state: Any = None
    if hasattr(obj, "__dict__"):
        state = vars(obj)
    elif hasattr(obj, "__slots__"):
        state = {s: getattr(obj, s) for s in obj.__slots__ if hasattr(obj, s)}
    if isinstance(state, dict):
        return [(f".{k}", v) for k, v in state.items()]
    return []


def find_unpicklable(obj: Any, path: str) -> tuple[str, Any]:
    """The deepest path below ``obj`` that still cannot be pickled.

    Example:
        >>> import threading
        >>> class Model:
        ...     def __init__(self):
        ...         self._lock = threading.Lock()
        >>> find_unpicklable({"model": Model()}, "args[0]")[0]
        "args[0]['model']._lock"
    """
    seen: set[int] = set()
    for _ in range(_MAX_DEPTH):
        seen.add(id(obj))
        for suffix, child in _children(obj):
            if id(child) in seen or _picklable(child):
                continue
            path, obj = path + suffix, child
            break
        else:
            return path, obj
    return path, obj
