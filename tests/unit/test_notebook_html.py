"""What results, estimates and electrons look like in a notebook cell."""

from __future__ import annotations

import dataclasses
import html.parser
import math
import re
import time
from datetime import UTC, datetime

import pytest

import cobalt as ct
from cobalt._estimate import Estimate, TaskEstimate
from cobalt._progress import _tasks_html
from cobalt._records import Status, TaskRecord
from cobalt._result import Result
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.pricing import LIST_PRICES

pytestmark = pytest.mark.unit


class _Checker(html.parser.HTMLParser):
    """Collects text and checks that every element it opens is closed."""

    VOID = {"br", "hr", "img", "col"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _text(markup: str) -> str:
    checker = _Checker()
    checker.feed(markup)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return " ".join(" ".join(checker.text).split())


def _record(node_id: int, name: str, status: Status, cost: float, *, emulated: bool) -> TaskRecord:
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    return TaskRecord(
        node_id=node_id,
        name=name,
        kind="electron",
        status=status,
        executor="gpu-box",
        hardware_requested=HardwareSpec(gpu="h100", gpus=1, memory_mb=49152, time_limit_s=3600),
        hardware_given=HardwareGiven(
            cpus=1, memory_mb=49152, gpu="h100", gpu_indices=(node_id,), emulated=emulated
        ),
        start_time=start,
        end_time=start,
        duration_s=1.5,
        error="",
        stdout="",
        stderr="",
        attempts=1,
        cost_usd=cost,
        billed_s=2.0,
    )


def _result(**overrides: object) -> Result:
    values: dict[str, object] = {
        "dispatch_id": "d" * 32,
        "name": "sweep <v2>",
        "status": Status.FAILED,
        "error": "Task 'train' (node 2) FAILED:\nValueError: x < 0",
        "start_time": datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        "end_time": datetime(2026, 11, 23, 12, 0, 3, tzinfo=UTC),
        "task_count": 2,
        "status_counts": {"COMPLETED": 1, "FAILED": 1},
        "cost_usd": 0.0035,
        "budget_usd": 5.0,
        "cost_emulated": True,
    }
    values.update(overrides)
    result = Result(**values)  # type: ignore[arg-type]
    result._tasks = [
        _record(1, "train", Status.COMPLETED, 0.0015, emulated=True),
        _record(2, "train", Status.FAILED, 0.002, emulated=True),
    ]
    return result


def test_a_result_shows_status_cost_error_and_its_task_table() -> None:
    markup = _result()._repr_html_()
    text = _text(markup)
    assert "sweep <v2>" in text and "&lt;v2&gt;" in markup, "names are escaped"
    assert "failed" in text and "3 s" in text
    assert "$0.00350 of a $5.00 budget" in text and "emulated" in text
    assert "ValueError: x &lt; 0" in markup
    for column in ("name", "status", "requested", "given", "executor", "duration", "cost"):
        assert column in text
    assert "1x H100 80GB (emulated)" in text
    assert "total $0.00350" in text, "the total row sums the tasks"


def test_task_tables_show_the_seconds_billed_beside_the_duration() -> None:
    result = _result()

    text_rows = [line for line in result.task_table().splitlines() if "train" in line]
    html_text = _text(result._repr_html_())

    assert len(text_rows) == 2 and all("1.5 s (billed 2 s)" in row for row in text_rows)
    assert html_text.count("1.5 s (billed 2 s)") == 2


def test_the_live_widget_shows_billed_seconds_and_a_running_task_s_time_so_far() -> None:
    done = _record(1, "train", Status.COMPLETED, 0.0015, emulated=False)
    running = dataclasses.replace(
        done,
        node_id=2,
        status=Status.RUNNING,
        start_time=datetime.fromtimestamp(time.time() - 2.5, tz=UTC),
        end_time=None,
        duration_s=None,
        billed_s=0.0,
        cost_usd=0.0,
    )

    text = _text(_tasks_html([done, running], 2))

    assert "1.5 s (billed 2 s)" in text
    assert re.search(r"running .* gpu-box 2(\.\d)? s… \$0\.00$", text), text
    assert text.count("billed") == 1, "a running task is billed when its attempt ends"


def test_a_result_whose_tasks_cannot_be_read_still_shows_its_status() -> None:
    result = _result(status=Status.RUNNING, error="")
    result._tasks = None
    text = _text(result._repr_html_())  # no controller runs for this test's home
    assert "running" in text and "tasks unavailable" in text


def test_an_estimate_shows_worst_and_expected_per_task() -> None:
    spec = HardwareSpec(gpu="h100", gpus=1, time_limit_s=600)
    est = Estimate(
        "sweep",
        [
            TaskEstimate(1, "train", "gpu", spec, 4.0, 4.0 / 6, 0.01, 9.0, 3, emulated=True),
            TaskEstimate(
                2,
                "adhoc",
                "gpu",
                HardwareSpec(gpu="h100", gpus=1),
                4.0,
                math.inf,
                None,
                None,
                0,
                emulated=True,
            ),
        ],
    )
    text = _text(est._repr_html_())
    assert "worst case unbounded" in text
    assert "$0.667" in text and "$0.0100 (3 runs)" in text and "no runs yet" in text


def test_an_electron_shows_its_spec_and_hourly_rate() -> None:
    @ct.electron(gpu="h100", cpus=24, memory="48GB", time_limit="18h")
    def finetune(model: str) -> str:
        return model

    text = _text(finetune._repr_html_())
    rate = LIST_PRICES.gpu_hour["h100"] + 24 * LIST_PRICES.cpu_core_hour
    rate += 48 * LIST_PRICES.memory_gb_hour
    assert "finetune" in text and "1x H100, 24 CPUs, 48 GB, limit 18h" in text
    assert f"${rate:.2f}/h at list prices" in text

    box = ct.LocalExecutor(name="box", prices={"gpu_hour": {"h100": 2.0}})

    @ct.electron(gpu="h100", executor=box)
    def priced() -> None:
        return None

    assert "$2.00/h on box" in _text(priced._repr_html_())


def test_a_remote_traceback_gets_the_source_lines_this_process_knows(tmp_path: object) -> None:
    import linecache

    from cobalt._failures import with_local_source

    cell = "/tmp/ipykernel_1/cell.py"
    linecache.cache[cell] = (40, None, ["def f(x):\n", "    return 1 / x\n"], cell)
    remote = (
        "Traceback (most recent call last):\n"
        f'  File "{cell}", line 2, in f\n'
        '  File "/opt/lib/known.py", line 9, in g\n'
        "    already_shown()\n"
        "ZeroDivisionError: division by zero\n"
    )
    filled = with_local_source(remote)
    assert f'  File "{cell}", line 2, in f\n    return 1 / x\n' in filled
    assert filled.count("already_shown()") == 1, "lines the worker showed are kept as they are"
    assert filled.endswith("ZeroDivisionError: division by zero\n")
