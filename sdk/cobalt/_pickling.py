"""Pickling at dispatch, with errors that name the offending object's path."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import pickle
import sys
import types
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle
import cloudpickle.cloudpickle as _cloudpickle_internals

from cobalt_common.errors import PicklingError

_MAX_DEPTH = 12
_installed: frozenset[str] | None = None
_modules_seen = 0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(
    obj: Any, describe: Callable[[], tuple[str, str]], refs: Mapping[int, str] | None = None
) -> bytes:
    """cloudpickle bytes of ``obj``; on failure a PicklingError naming the path.

    Args:
        obj: the function or value to pickle.
        describe: called only on failure; returns how the user would name the
            object (``"args[0]"``) and a phrase for the message
            (``"argument args[0] of task 'train'"``).
        refs: objects already stored as payloads, by ``id``: each is written as
            the sha256 of its payload, not again (:func:`loads` with ``fetch``
            reads it back).
    """
    _register_local_modules()
    try:
        buffer = io.BytesIO()
        pickler = _RefPickler(buffer, refs) if refs else _Pickler(buffer, pickle.HIGHEST_PROTOCOL)
        pickler.dump(obj)
        return buffer.getvalue()
    except Exception as exc:
        path, what = describe()
        bad_path, bad = find_unpicklable(obj, path)
        raise PicklingError(
            f"cannot pickle {what}: {bad_path} is a {type(bad).__name__} "
            f"({type(exc).__name__}: {exc}). Tasks run in other processes, so everything they "
            "receive must be picklable: create such objects inside the task, or pass what is "
            "needed to rebuild them."
        ) from None


def loads(data: bytes, what: str, fetch: Callable[[str], bytes] | None = None) -> Any:
    """The object pickled in ``data``; a PicklingError naming ``what`` when it cannot be
    rebuilt here (a module it needs is not installed, or another Python wrote it).

    ``fetch`` gives the bytes of a payload by sha256, for objects that :func:`dumps`
    wrote as references (``refs``).
    """
    try:
        if fetch is None:
            return cloudpickle.loads(data)
        return _RefUnpickler(io.BytesIO(data), lambda sha: loads(fetch(sha), what, fetch)).load()
    except PicklingError:
        raise
    except Exception as exc:
        raise PicklingError(
            f"cannot unpickle {what} here ({type(exc).__name__}: {exc}). Install what it "
            "imports in this environment, with the Python and cloudpickle versions that "
            "dispatched it."
        ) from None


def _code_with_filename(
    constructor: Callable[..., types.CodeType], args: tuple[Any, ...], filename: str
) -> types.CodeType:
    """Rebuilds a code object pickled by value under the file name it was defined in."""
    return constructor(*args).replace(co_filename=filename)


_cloudpickle_code_reduce: Callable[[types.CodeType], tuple[Any, tuple[Any, ...]]] | None = getattr(
    _cloudpickle_internals, "_code_reduce", None
)


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """cloudpickle's reduction of a code object, keeping ``co_filename``.

    cloudpickle 3.1.3 and later write every code object pickled by value with
    the file name ``<dynamic-code>``, so that payloads do not depend on where a
    function was defined. A remote traceback then names no file and shows no
    source line, and neither does a debugger stepping into ``rerun_locally``.
    The file name is put back when the code is rebuilt; source lines come from
    that file where the worker has it, and from the caller's line cache
    (notebook cells) where it does not.
    """
    assert _cloudpickle_code_reduce is not None
    constructor, args = _cloudpickle_code_reduce(code)
    return _code_with_filename, (constructor, args, code.co_filename)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, with code objects that keep their file names."""

    if _cloudpickle_code_reduce is not None:
        dispatch_table = ChainMap(
            {types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table
        )


class _RefPickler(_Pickler):
    """Writes the objects in ``refs`` (by ``id``) as the sha256 of their stored payload."""

    def __init__(self, file: io.BytesIO, refs: Mapping[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs = refs

    def persistent_id(self, obj: Any) -> str | None:
        return self.refs.get(id(obj))


class _RefUnpickler(pickle.Unpickler):
    """Reads what :class:`_RefPickler` wrote, loading each reference with ``load_ref``."""

    def __init__(self, file: io.BytesIO, load_ref: Callable[[str], Any]) -> None:
        super().__init__(file)
        self.load_ref = load_ref

    def persistent_load(self, pid: Any) -> Any:
        return self.load_ref(str(pid))


def _register_local_modules() -> None:
    """Pickle by value the code of every imported module that is not installed.

    Workers can import the standard library and installed distributions, but
    not a module that sits next to a script or a notebook, so such a module's
    functions and classes travel by value, like ``__main__``'s.
    """
    global _installed, _modules_seen
    if len(sys.modules) == _modules_seen:
        return
    if _installed is None:
        _installed = frozenset(
            {*importlib.metadata.packages_distributions(), *sys.stdlib_module_names}
        )
    _modules_seen = len(sys.modules)
    for name, module in list(sys.modules.items()):
        if (
            isinstance(module, types.ModuleType)
            and name != "__main__"
            and name.partition(".")[0] not in _installed
            and getattr(module, "__file__", None)
        ):
            cloudpickle.register_pickle_by_value(module)


def _picklable(obj: Any) -> bool:
    try:
        cloudpickle.dump(obj, io.BytesIO())
    except Exception:
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
