"""Type hints of endpoints pickled by value, as a replica sees them."""

from __future__ import annotations

import doctest
import types
from collections.abc import Callable
from typing import Any

import pytest

from cobalt import _hints
from cobalt._runtime import validation
from cobalt._runtime.validation import BadRequest, RequestBody

pytestmark = pytest.mark.unit


def predict(model: dict[str, Any], text: str, times: int = 1) -> dict[str, Any]:
    return {"label": text * times}


def as_in_a_replica(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function with only the globals its code uses, as cloudpickle rebuilds it."""
    assert isinstance(function, types.FunctionType)
    copy = types.FunctionType(function.__code__, {"__builtins__": __builtins__}, function.__name__)
    copy.__annotations__ = dict(function.__annotations__)
    copy.__defaults__ = function.__defaults__
    return copy


def test_a_hint_that_does_not_resolve_does_not_drop_the_others() -> None:
    body = RequestBody.of(as_in_a_replica(predict), injected={"model"})
    assert body.parse(b'{"text": "hi", "times": 2}') == {"text": "hi", "times": 2}
    with pytest.raises(BadRequest) as caught:
        body.parse(b'{"text": "hi", "times": "many"}')
    assert caught.value.field == "times"


def test_typing_names_resolve_without_the_module_globals() -> None:
    def tagged(tags: list[Any], limit: int | None = None) -> int:
        return len(tags)

    body = RequestBody.of(as_in_a_replica(tagged))
    assert body.parse(b'{"tags": [1, "a"], "limit": 3}') == {"tags": [1, "a"], "limit": 3}
    with pytest.raises(BadRequest) as caught:
        body.parse(b'{"tags": [], "limit": "x"}')
    assert caught.value.field == "limit"


@pytest.mark.parametrize("module", [_hints, validation], ids=lambda m: m.__name__)
def test_the_docstring_examples_run(module: types.ModuleType) -> None:
    results = doctest.testmod(module)
    assert results.attempted and not results.failed
