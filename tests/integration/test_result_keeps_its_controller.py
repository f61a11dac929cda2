"""A Result keeps talking to the controller that ran its dispatch after COBALT_HOME moves on,
also when that controller restarts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import ControllerHome

import cobalt as ct

pytestmark = pytest.mark.integration


@ct.electron
def double(x: int) -> int:
    return 2 * x


@ct.electron
def explode(x: int) -> int:
    raise ValueError(f"bad input {x}")


@ct.lattice
def doubled(x: int) -> int:
    return double(x)


@ct.lattice
def exploding(x: int) -> int:
    return explode(double(x))


def test_a_result_reads_from_its_own_controller_when_another_home_is_current(
    make_controller_home: Callable[..., ControllerHome], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_controller_home(), make_controller_home()
    first.start()
    second.start()
    # Switched by hand: home.active() would also close the SDK's cached clients.
    monkeypatch.setenv("COBALT_HOME", str(first.path))
    done = ct.dispatch_sync(doubled, progress=False)(21)
    failed = ct.dispatch_sync(exploding, progress=False, raise_on_failure=False)(4)

    monkeypatch.setenv("COBALT_HOME", str(second.path))
    with pytest.raises(ct.NotFoundError):
        ct.get_result(done.dispatch_id)  # the current home's controller never saw it

    assert done.result == 42
    assert [t.name for t in done.tasks] == ["double"]
    assert done.get_node_result(done.tasks[0].node_id)["output"] == 42
    with pytest.raises(ct.TaskFailedError, match="bad input 8") as info:
        failed.raise_for_status()
    assert info.value.task_name == "explode"
    with pytest.raises(ValueError, match="bad input 8"):
        failed.rerun_locally(info.value.node_id or 0)

    first.stop()
    first.start()  # a new address and token; the dispatches are in its store
    assert done.get_node_result(done.tasks[0].node_id)["output"] == 42
