"""What a worker calls: a task's function wrapped with its dependencies.

This module is unpickled on workers, so it stays small and imports only the
dependency kinds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from cobalt._deps import Deps, DepsCall


def as_keywords(returned: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The keyword arguments ``call_before`` hooks pass: each ``retval_keyword``
    with its hook's value, or the list of values when several hooks name it.

    Example:
        >>> as_keywords([("a", 1), ("b", 2), ("a", 3)])
        {'a': [1, 3], 'b': 2}
    """
    values: dict[str, list[Any]] = {}
    for keyword, value in returned:
        values.setdefault(keyword, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in values.items()}


class TaskCallable:
    """A task's function with the dependencies to run around it.

    Args:
        fn: the user's function.
        before: run in order before ``fn`` (deps_bash, deps_pip, then
            call_before); a ``DepsCall`` with ``retval_keyword`` passes its
            return value to ``fn`` under that keyword. When several name the
            same keyword, ``fn`` gets the list of their values, in order.
        after: run in order after ``fn`` returns (call_after); not run when
            ``fn`` raises.
        workdir: the directory to run in, created when missing ("" to stay
            where the worker starts the task).
        log_files: files (stdout, stderr; "" for none) that the worker appends
            the task's output to once it ends, on the machine where it ran.

    Example:
        >>> from cobalt._deps import DepsCall
        >>> task = TaskCallable(lambda x, scale: x * scale,
        ...                     before=(DepsCall(int, args=["3"], retval_keyword="scale"),))
        >>> task(2)
        6
        >>> both = TaskCallable(lambda paths: paths, before=(
        ...     DepsCall(str, args=["a"], retval_keyword="paths"),
        ...     DepsCall(str, args=["b"], retval_keyword="paths")))
        >>> both()
        ['a', 'b']
    """

    __slots__ = ("after", "before", "fn", "log_files", "workdir")

    def __init__(
        self,
        fn: Callable[..., Any],
        before: tuple[Deps, ...] = (),
        after: tuple[Deps, ...] = (),
        *,
        workdir: str = "",
        log_files: tuple[str, str] = ("", ""),
    ) -> None:
        self.fn = fn
        self.before = before
        self.after = after
        self.workdir = workdir
        self.log_files = log_files

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.workdir:  # the worker returns to its own directory after every task
            path = os.path.expanduser(self.workdir)
            os.makedirs(path, exist_ok=True)
            os.chdir(path)
        returned = []
        for dep in self.before:
            value = dep.run()
            if isinstance(dep, DepsCall) and dep.retval_keyword:
                returned.append((dep.retval_keyword, value))
        kwargs.update(as_keywords(returned))
        result = self.fn(*args, **kwargs)
        for dep in self.after:
            dep.run()
        return result

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"TaskCallable({name}, before={list(self.before)!r}, after={list(self.after)!r})"
