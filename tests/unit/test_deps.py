from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from cobalt._deps import DepsBash, DepsCall, DepsPip, as_deps_bash, as_deps_pip, as_hooks
from cobalt._runtime.task import TaskCallable
from cobalt_common.errors import Error, SpecError, TaskFailedError

pytestmark = pytest.mark.unit


class FakeRun:
    """Stands in for subprocess.run and records the commands."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, command: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append((command, kwargs))
        if self.fail:
            raise subprocess.CalledProcessError(1, command)
        return subprocess.CompletedProcess(command, 0)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    run = FakeRun()
    monkeypatch.setattr(subprocess, "run", run)
    return run


def test_deps_pip_accepts_one_package_or_a_list() -> None:
    assert DepsPip("numpy").packages == ("numpy",)
    assert DepsPip(packages=["numpy==1.26", "scipy"]).packages == ("numpy==1.26", "scipy")


def test_deps_pip_reads_the_requirements_file_on_the_client(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# pinned\npandas==2.2  # data\n\ntorch\n")
    assert DepsPip(["numpy"], reqs_path=reqs).packages == ("numpy", "pandas==2.2", "torch")


def test_deps_pip_with_a_missing_requirements_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.txt"):
        DepsPip(reqs_path=tmp_path / "missing.txt")


def test_deps_pip_installs_with_the_workers_own_python(fake_run: FakeRun) -> None:
    DepsPip(["numpy==1.26", "scipy"]).run()
    command, kwargs = fake_run.calls[0]
    assert command == [sys.executable, "-m", "pip", "install", "numpy==1.26", "scipy"]
    assert kwargs["check"] is True
    assert "capture_output" not in kwargs and "stdout" not in kwargs


def test_deps_pip_without_packages_runs_nothing(fake_run: FakeRun) -> None:
    DepsPip().run()
    assert fake_run.calls == []


def test_failed_pip_install_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", FakeRun(fail=True))
    with pytest.raises(TaskFailedError, match=r"pip install nosuchpkg.*exit code 1"):
        DepsPip(["nosuchpkg"]).run()


def test_deps_bash_runs_each_command_in_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    DepsBash([f"echo one > {out}", f"echo two >> {out}"]).run()
    assert out.read_text().split() == ["one", "two"]


def test_deps_bash_accepts_a_single_command_string(fake_run: FakeRun) -> None:
    DepsBash("make setup").run()
    assert fake_run.calls == [("make setup", {"shell": True, "check": True})]


def test_failed_bash_command_is_named_and_stops_the_rest(tmp_path: Path) -> None:
    marker = tmp_path / "after"
    with pytest.raises(TaskFailedError, match="`exit 3` failed with exit code 3"):
        DepsBash(["exit 3", f"touch {marker}"]).run()
    assert not marker.exists()


def test_deps_call_returns_the_functions_result() -> None:
    assert DepsCall(pow, args=[2, 10]).run() == 1024
    assert DepsCall(dict, kwargs={"a": 1}).run() == {"a": 1}


def test_failing_deps_call_names_the_function_and_keeps_the_cause() -> None:
    def connect() -> None:
        raise ConnectionError("db down")

    with pytest.raises(TaskFailedError, match=r"connect.*ConnectionError: db down") as info:
        DepsCall(connect).run()
    assert isinstance(info.value.__cause__, ConnectionError)


def test_deps_call_rejects_a_non_callable_and_a_bad_retval_keyword() -> None:
    with pytest.raises(SpecError, match="callable"):
        DepsCall("not a function")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="retval_keyword='not valid'"):
        DepsCall(print, retval_keyword="not valid")


def test_deps_errors_share_cobalts_exception_root() -> None:
    assert issubclass(TaskFailedError, Error) and issubclass(SpecError, Error)


def test_deps_compare_by_value() -> None:
    assert DepsPip(["a"]) == DepsPip("a")
    assert DepsBash("x") != DepsPip("x")
    assert DepsCall(print, args=[1]) == DepsCall(print, args=(1,))


def test_deps_survive_a_cloudpickle_round_trip() -> None:
    scale = 3
    deps = [DepsPip(["numpy"]), DepsBash("true"), DepsCall(lambda x: x * scale, args=[2])]
    restored = cloudpickle.loads(cloudpickle.dumps(deps))
    assert restored[:2] == deps[:2]
    assert restored[2].run() == 6


def test_option_values_become_deps_objects() -> None:
    assert as_deps_pip(["numpy"]) == DepsPip(["numpy"])
    assert as_deps_bash("make") == DepsBash(["make"])
    hook = DepsCall(print)
    assert as_hooks(hook, "call_before") == (hook,)
    assert as_hooks([hook, DepsBash("true")], "call_after") == (hook, DepsBash("true"))


def test_a_bare_function_as_hook_suggests_wrapping_it_in_deps_call() -> None:
    def setup() -> None: ...

    with pytest.raises(SpecError, match=r"call_before.*ct\.DepsCall\(.*setup\)"):
        as_hooks(setup, "call_before")


def test_invalid_deps_option_values_name_the_option() -> None:
    with pytest.raises(SpecError, match="deps_pip must be"):
        as_deps_pip(42)
    with pytest.raises(SpecError, match="deps_bash must be"):
        as_deps_bash({"cmd": "x"})
    with pytest.raises(SpecError, match="DepsPip packages must be non-empty strings"):
        as_deps_pip(["numpy", 3])


def test_task_callable_runs_hooks_in_order_around_the_function(fake_run: FakeRun) -> None:
    events: list[str] = []

    def task(x: int) -> int:
        events.append("task")
        return x + 1

    task_callable = TaskCallable(
        task,
        before=(
            DepsBash("setup.sh"),
            DepsPip(["numpy"]),
            DepsCall(events.append, args=["before"]),
        ),
        after=(DepsCall(events.append, args=["after"]),),
    )
    assert task_callable(1) == 2
    assert [command for command, _ in fake_run.calls] == [
        "setup.sh",
        [sys.executable, "-m", "pip", "install", "numpy"],
    ]
    assert events == ["before", "task", "after"]


def test_task_callable_passes_retval_keyword_results_to_the_function() -> None:
    def query(sql: str, *, connection: str, user: str) -> str:
        return f"{user}@{connection}: {sql}"

    task_callable = TaskCallable(
        query,
        before=(
            DepsCall(str.upper, args=["db"], retval_keyword="connection"),
            DepsCall(lambda: "ada", retval_keyword="user"),
            DepsCall(lambda: "ignored"),
        ),
    )
    assert task_callable("select 1") == "ada@DB: select 1"


def test_task_callable_does_not_run_after_hooks_when_the_function_fails() -> None:
    events: list[str] = []

    def boom() -> None:
        raise ValueError("bad")

    task_callable = TaskCallable(boom, after=(DepsCall(events.append, args=["after"]),))
    with pytest.raises(ValueError, match="bad"):
        task_callable()
    assert events == []


def test_task_callable_survives_a_cloudpickle_round_trip() -> None:
    offset = 10

    def add(x: int, *, extra: int) -> int:
        return x + extra + offset

    task_callable = TaskCallable(add, before=(DepsCall(int, args=["5"], retval_keyword="extra"),))
    restored = cloudpickle.loads(cloudpickle.dumps(task_callable))
    assert isinstance(restored, TaskCallable)
    assert restored(1) == 16
    assert "add" in repr(restored)
