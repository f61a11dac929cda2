"""Covalent's executor spellings on a real controller: ``ct.executor.LocalExecutor()``
with ``log_stdout``/``log_stderr``/``workdir``, executors given as type names
(``executor="local"``, ``executor="dask"``), and ``ct.executor.DaskExecutor`` picking
the Dask executor configured for its scheduler address (a real loopback cluster from
``tests/service_dask.py``), while an address the controller is not configured for
fails at dispatch with the ``config.toml`` table to add.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from service_dask import DaskCluster, dask_cluster, dask_config  # noqa: F401

import cobalt as ct

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

NO_LOCAL_NAMED_LOCAL = """\
[controller]
retry_backoff_s = 0.05
dashboard_address = ""
gateway_address = ""

[executors.cpu]
type = "local"
cpus = 2
workers = 1
"""
"""A controller whose only executor is a local one that is not called "local"."""


def test_a_covalent_style_workflow_runs_with_local_executors_and_their_log_files(
    make_controller_home: Callable[..., ControllerHome], tmp_path: Path
) -> None:
    make_controller_home(NO_LOCAL_NAMED_LOCAL).start()
    out, err, workdir = tmp_path / "task.out", tmp_path / "task.err", tmp_path / "work"
    err.write_text("kept\n")
    logged = ct.executor.LocalExecutor(
        log_stdout=str(out), log_stderr=str(err), workdir=str(workdir)
    )

    @ct.electron(executor="local")
    def add(a: int, b: int) -> int:
        return a + b

    @ct.electron(executor=logged)
    def shout(x: int) -> str:
        print(f"hello {x}")
        print(f"careful {x}", file=sys.stderr)
        return os.getcwd()

    @ct.lattice(executor="local")
    def flow(x: int) -> tuple[int, str]:
        return add(x, 1), shout(x)

    result = ct.dispatch_sync(flow)(41)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == (42, str(workdir))
    executors = {t.name: t.executor for t in result.tasks}
    assert executors["add"] == "cpu", "a type name runs on the sole configured executor of it"
    assert out.read_text() == "hello 41\n"
    assert err.read_text() == "kept\ncareful 41\n", "log files are appended to, not replaced"
    shout_record = next(t for t in result.tasks if t.name == "shout")
    assert shout_record.stdout == "hello 41\n", "the record keeps the output too"

    again = ct.dispatch_sync(flow)(1)
    assert again.status == ct.Status.COMPLETED, again.error
    assert out.read_text() == "hello 41\nhello 1\n"


def test_a_type_name_with_no_executor_of_that_type_fails_listing_the_configured_ones(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    make_controller_home(NO_LOCAL_NAMED_LOCAL).start()

    @ct.electron(executor="dask")
    def on_dask() -> int:
        return 1

    @ct.lattice
    def flow() -> int:
        return on_dask()

    with pytest.raises(ct.UnsatisfiableError) as caught:
        ct.dispatch(flow)()
    message = str(caught.value)
    assert 'executor="dask" matches no executor' in message
    assert "configured executors: cpu" in message
    assert 'type = "dask"' in message


def test_a_dask_executor_naming_the_configured_scheduler_runs_there_and_others_fail(
    make_controller_home: Callable[..., ControllerHome],
    dask_cluster: DaskCluster,  # noqa: F811
) -> None:
    make_controller_home(dask_config(dask_cluster)).start()
    on_cluster = ct.executor.DaskExecutor(scheduler_address=dask_cluster.address)

    @ct.electron(executor=on_cluster)
    def where() -> int:
        return os.getpid()

    @ct.electron(executor="dask")
    def where_by_type() -> int:
        return os.getpid()

    @ct.lattice
    def flow() -> tuple[int, int]:
        return where(), where_by_type()

    result = ct.dispatch_sync(flow)()
    assert result.status == ct.Status.COMPLETED, result.error
    assert {t.name: t.executor for t in result.tasks} == {"where": "gpus", "where_by_type": "gpus"}
    assert os.getpid() not in result.result

    elsewhere = ct.executor.DaskExecutor(scheduler_address="tcp://127.0.0.1:1")

    @ct.electron(executor=elsewhere)
    def nowhere() -> int:
        return 0

    @ct.lattice
    def unconfigured() -> int:
        return nowhere()

    with pytest.raises(ct.UnsatisfiableError) as caught:
        ct.dispatch(unconfigured)()
    message = str(caught.value)
    assert "matches no executor of this controller" in message
    assert "configured executors: local, gpus" in message
    assert 'type = "dask"\naddress = "tcp://127.0.0.1:1"' in message
