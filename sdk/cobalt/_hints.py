"""Type hints of a user's function, read the same way at decoration and in a replica.

``@svc.endpoint(batch=...)`` checks at decoration that a batched endpoint takes
a list (:func:`cobalt._service.check_batched_signature`); the replica builds
each endpoint's request model from the same hints
(:mod:`cobalt._runtime.validation`). Plain :mod:`typing`, no pydantic, so the
notebook side stays light.

Example:
    >>> def predict(model, text: list[str], n: int = 1) -> list[str]:
    ...     return text * n
    >>> hints = hints_of(predict)
    >>> list_element(hints["text"]), list_element(hints["n"])
    (<class 'str'>, None)
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any


def hints_of(function: Callable[..., Any]) -> dict[str, Any]:
    """``function``'s type hints by parameter name; one that cannot be resolved is left out."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:
        pass
    # One hint that does not resolve must not drop the others: a function pickled by
    # value keeps only the globals its code uses, so ``Any`` in ``model: dict[str, Any]``
    # is gone in a replica. Resolve each alone, with typing's names as a fallback;
    # one that still fails accepts any JSON.
    namespace = {n: getattr(typing, n) for n in typing.__all__}
    namespace.update(getattr(function, "__globals__", {}))
    hints: dict[str, Any] = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return hints


def list_element(annotation: Any) -> Any:
    """``T`` for ``list[T]``, ``Any`` for ``list`` or ``Any``; ``None`` for anything else."""
    if annotation is Any or annotation is list:
        return Any
    if typing.get_origin(annotation) is typing.Annotated:
        return list_element(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is list:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None
