"""Dependencies a task installs or runs on its worker, with Covalent's semantics.

``DepsPip`` installs packages, ``DepsBash`` runs shell commands and
``DepsCall`` calls a function, before (or, for ``call_after``, after) the
task itself. They are plain picklable objects: they are built on the client
and performed on the worker by :meth:`Deps.run`.

Example:
    >>> from cobalt._deps import DepsBash, DepsCall
    >>> DepsBash("echo ready").commands
    ('echo ready',)
    >>> DepsCall(max, args=[2, 3]).run()
    3
"""

from __future__ import annotations

import abc
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cobalt_common.errors import SpecError, TaskFailedError


class Deps(abc.ABC):
    """Base of the dependency kinds; :meth:`run` performs one on the worker."""

    @abc.abstractmethod
    def run(self) -> Any:
        """Perform the dependency where the task runs."""

    @abc.abstractmethod
    def _key(self) -> tuple[Any, ...]: ...

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Deps) and type(other) is type(self) and self._key() == other._key()


def _strings(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    bad = [item for item in items if not isinstance(item, str) or not item.strip()]
    if bad:
        raise SpecError(f"{what} must be non-empty strings, got {bad[0]!r}.")
    return items


class DepsPip(Deps):
    """Packages to ``pip install`` into the worker's Python before the task.

    Args:
        packages: requirement strings such as ``"numpy==1.26"`` (one string or a list).
        reqs_path: a requirements file, read now on the client so the worker
            does not need it; its packages follow ``packages``.

    Example:
        >>> DepsPip(packages=["numpy==1.26", "scipy"])
        DepsPip(packages=['numpy==1.26', 'scipy'])
    """

    def __init__(
        self, packages: str | Sequence[str] = (), reqs_path: str | os.PathLike[str] | None = None
    ) -> None:
        listed = _strings(packages, "DepsPip packages")
        if reqs_path is not None:
            try:
                with open(reqs_path, encoding="utf-8") as file:
                    lines = [line.split("#", 1)[0].strip() for line in file]
            except OSError as exc:
                raise SpecError(
                    f"DepsPip cannot read reqs_path={os.fspath(reqs_path)!r}: {exc.strerror}; "
                    "pass the path of an existing requirements file."
                ) from None
            listed += tuple(line for line in lines if line)
        self.packages = listed

    def run(self) -> None:
        """Install the packages with the worker's own ``python -m pip``."""
        if not self.packages:
            return
        command = [sys.executable, "-m", "pip", "install", *self.packages]
        try:
            subprocess.run(command, check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            raise TaskFailedError(
                f"DepsPip failed: `pip install {' '.join(self.packages)}` {_why(exc)}; "
                "check the package names and versions in the task's log."
            ) from exc

    def _key(self) -> tuple[Any, ...]:
        return self.packages

    def __repr__(self) -> str:
        return f"DepsPip(packages={list(self.packages)!r})"


class DepsBash(Deps):
    """Shell commands to run, in order, on the worker before the task.

    Args:
        commands: one command string or a list of them; each runs with
            ``shell=True`` and its output goes to the task's log.

    Example:
        >>> DepsBash(["apt-get update", "apt-get install -y ffmpeg"]).commands[1]
        'apt-get install -y ffmpeg'
    """

    def __init__(self, commands: str | Sequence[str] = ()) -> None:
        self.commands = _strings(commands, "DepsBash commands")

    def run(self) -> None:
        """Run each command; stop at the first that fails."""
        for command in self.commands:
            try:
                subprocess.run(command, shell=True, check=True)
            except (subprocess.CalledProcessError, OSError) as exc:
                raise TaskFailedError(
                    f"DepsBash command `{command}` {_why(exc)}; its output is in the task's log."
                ) from exc

    def _key(self) -> tuple[Any, ...]:
        return self.commands

    def __repr__(self) -> str:
        return f"DepsBash(commands={list(self.commands)!r})"


class DepsCall(Deps):
    """A function to call on the worker before (or after) the task.

    Args:
        func: the function; it is pickled with the task.
        args: positional arguments for ``func``.
        kwargs: keyword arguments for ``func``.
        retval_keyword: in ``call_before``, pass ``func``'s return value to
            the task as this keyword argument.

    Example:
        >>> DepsCall(dict, kwargs={"host": "db"}, retval_keyword="config").run()
        {'host': 'db'}
    """

    def __init__(
        self,
        func: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        retval_keyword: str | None = None,
    ) -> None:
        if not callable(func):
            raise SpecError(f"DepsCall needs a callable as func, got {func!r}.")
        if retval_keyword is not None and not str(retval_keyword).isidentifier():
            raise SpecError(
                f"DepsCall retval_keyword={retval_keyword!r} must be a keyword argument name "
                "of the task, such as 'connection'."
            )
        self.func = func
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.retval_keyword = retval_keyword

    def run(self) -> Any:
        """Call ``func(*args, **kwargs)`` and return its result."""
        try:
            return self.func(*self.args, **self.kwargs)
        except Exception as exc:
            raise TaskFailedError(
                f"DepsCall {_name(self.func)}() raised {type(exc).__name__}: {exc}"
            ) from exc

    def _key(self) -> tuple[Any, ...]:
        return (self.func, self.args, self.kwargs, self.retval_keyword)

    def __repr__(self) -> str:
        keyword = f", retval_keyword={self.retval_keyword!r}" if self.retval_keyword else ""
        return f"DepsCall({_name(self.func)}, args={list(self.args)!r}{keyword})"


def _name(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", None) or func)


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return f"failed with exit code {exc.returncode}"
    return f"could not start ({exc})"


def as_deps_pip(value: object, option: str = "deps_pip") -> DepsPip:
    """Accept ``ct.DepsPip(...)``, a package string or a list of them."""
    if isinstance(value, DepsPip):
        return value
    if isinstance(value, str | list | tuple):
        return DepsPip(packages=value)
    raise SpecError(
        f'{option} must be ct.DepsPip(...) or a list of packages such as ["numpy==1.26"], '
        f"got {value!r}."
    )


def as_deps_bash(value: object, option: str = "deps_bash") -> DepsBash:
    """Accept ``ct.DepsBash(...)``, a command string or a list of them."""
    if isinstance(value, DepsBash):
        return value
    if isinstance(value, str | list | tuple):
        return DepsBash(commands=value)
    raise SpecError(
        f'{option} must be ct.DepsBash(...), a command string or a list such as ["make"], '
        f"got {value!r}."
    )


def as_hooks(value: object, option: str) -> tuple[Deps, ...]:
    """Accept one ``Deps`` or a list of them, for ``call_before``/``call_after``."""
    hooks: list[Deps] = []
    for item in value if isinstance(value, list | tuple) else [value]:
        if isinstance(item, Deps):
            hooks.append(item)
        else:
            hint = f" Wrap the function: ct.DepsCall({_name(item)})." if callable(item) else ""
            raise SpecError(
                f"{option} must be a ct.DepsCall/DepsPip/DepsBash or a list of them, "
                f"got {item!r}.{hint}"
            )
    return tuple(hooks)
