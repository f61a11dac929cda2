"""A task's traceback, as the worker reports it, shows the user's frames and none of cobalt's."""

from __future__ import annotations

import inspect

import pytest

from cobalt._runtime.task import TaskCallable
from cobalt_executors._runtime import worker

pytestmark = pytest.mark.unit


def _explode(x: int) -> int:
    raise ValueError(f"bad input {x}")


def test_the_worker_names_the_module_that_wraps_every_task() -> None:
    assert TaskCallable.__module__ == worker.TASK_MODULE


def test_a_remote_traceback_keeps_the_users_frames_and_drops_the_task_wrapper() -> None:
    try:
        TaskCallable(_explode)(7)
    except ValueError as exc:
        text = worker.format_remote_traceback(exc)
    else:
        raise AssertionError("the task did not raise")
    assert "ValueError: bad input 7" in text
    assert "in _explode" in text and "test_remote_traceback.py" in text
    assert inspect.getfile(TaskCallable) not in text
    assert "in __call__" not in text
