"""Every code block of the README, of docs/ and of bench/README.md runs as a reader runs it.

A page's blocks run in order under one fresh ``COBALT_HOME``, so they share
the controller the first of them starts, as they would in a reader's
terminal; each python block is a process of its own.

- ``python``: run with ``python -c``;
- ``bash``: run with ``bash -euo pipefail -c``, the environment's ``cobalt``
  first on ``PATH``;
- ``toml``: written as the home's ``config.toml`` and read by the
  controller's configuration loader, which must accept it;
- ``text``: a drawing or a listing, not code.

A block right after a ``<!-- not run: <why> -->`` line is not run, and the
line says why: it is for commands a reader runs by hand that cannot run
inside the suite (the suite itself, benchmarks that take minutes). Any other
fence, or a block without a language, fails the first test below, so no
block goes unrun by accident. The tests after it check what some blocks
print, from the same runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cobalt_common.errors import ConfigError
from cobalt_controller._config import load_config

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
RUN = {"python", "bash", "toml"}
NOT_CODE = {"text"}
TIMEOUT_S = {"python": 240, "bash": 120}

FENCE = re.compile(
    r"^(?:<!-- not run: (?P<why>.*?) -->\n)?```(?P<lang>[^\n]*)\n(?P<code>.*?)^```[ \t]*$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    line: int
    lang: str
    code: str
    not_run: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Ran:
    """A block and what running it gave."""

    block: Block
    returncode: int
    stdout: str
    stderr: str


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [
        Block(
            page,
            text.count("\n", 0, m.start("lang")) + 1,
            m["lang"].strip(),
            m["code"],
            m["why"],
        )
        for m in FENCE.finditer(text)
    ]


def runs(block: Block) -> bool:
    return block.lang in RUN and block.not_run is None


class Pages:
    """Runs each page's blocks once, in order, under a home of its own; stops the
    controllers they started at the end."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.done: dict[Path, list[Ran]] = {}
        self.envs: dict[Path, dict[str, str]] = {}

    def run(self, page: Path) -> list[Ran]:
        if page not in self.done:
            self.done[page] = self._run_page(page)
        return self.done[page]

    def find(self, page: Path, needle: str) -> Ran:
        """The run of the one block of ``page`` that contains ``needle``."""
        found = [r for r in self.run(page) if needle in r.block.code]
        assert len(found) == 1, f"{len(found)} blocks of {page.name} contain {needle!r}"
        ran = found[0]
        assert ran.returncode == 0, f"{ran.block.where} failed:\n{ran.stdout}\n{ran.stderr}"
        return ran

    def _run_page(self, page: Path) -> list[Ran]:
        home = self.tmp.mktemp(page.stem.lower()) / "home"
        home.mkdir()
        env = {**os.environ, "COBALT_HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}"}
        for name in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN", "DISPLAY"):
            env.pop(name, None)
        env.pop("WAYLAND_DISPLAY", None)
        self.envs[page] = env
        return [self._run(b, home, env) for b in blocks(page) if runs(b)]

    def _run(self, block: Block, home: Path, env: dict[str, str]) -> Ran:
        if block.lang == "toml":
            path = home / "config.toml"
            path.write_text(block.code)
            try:
                load_config(home, path)
            except ConfigError as exc:
                return Ran(block, 1, "", str(exc))
            finally:
                path.unlink()
            return Ran(block, 0, "", "")
        argv = (
            [sys.executable, "-c", block.code]
            if block.lang == "python"
            else ["bash", "-euo", "pipefail", "-c", block.code]
        )
        out = subprocess.run(
            argv,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S[block.lang],
        )
        return Ran(block, out.returncode, out.stdout, out.stderr)

    def close(self) -> None:
        for env in self.envs.values():
            subprocess.run(
                [str(BIN / "cobalt"), "controller", "stop"], env=env, capture_output=True
            )


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    p = Pages(tmp_path_factory)
    try:
        yield p
    finally:
        p.close()


def test_every_block_is_run_or_says_why_not() -> None:
    problems = []
    for page in PAGES:
        for b in blocks(page):
            if b.lang not in RUN | NOT_CODE:
                problems.append(f"{b.where}: ```{b.lang}: use python, bash, toml or text")
            elif b.not_run is not None and (b.lang not in RUN or len(b.not_run) < 20):
                problems.append(f"{b.where}: a block not run is code, and says why at length")
    assert not problems, "\n".join(problems)
    not_run = [b.where for page in PAGES for b in blocks(page) if b.not_run is not None]
    assert len(not_run) <= 2, f"keep the blocks that are not run few: {not_run}"


LINK = re.compile(r"\]\((?!https?:)(?P<path>[^)#\s]*)(?:#(?P<anchor>[^)\s]+))?\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_between_pages_leads_to_a_page_and_its_heading() -> None:
    broken = []
    for page in PAGES:
        for m in LINK.finditer(page.read_text()):
            target = (page.parent / m["path"]).resolve() if m["path"] else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {m[0]} (no such file)")
            elif m["anchor"] and target.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)
                if m["anchor"] not in {slug(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {m[0]} (no such heading)")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if any(runs(b) for b in blocks(p))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_code_block_of_the_page_runs(pages: Pages, page: Path) -> None:
    failed = [r for r in pages.run(page) if r.returncode != 0]
    assert not failed, "\n\n".join(
        f"{r.block.where} exited {r.returncode}:\n{r.stdout}\n{r.stderr}" for r in failed
    )


# -- what some blocks print ---------------------------------------------------------------

README = ROOT / "README.md"
DOCS = ROOT / "docs"


def test_readme_example_estimates_then_runs_and_prints_a_task_table(pages: Pages) -> None:
    out = pages.find(README, "dispatch_sync").stdout
    assert "COMPLETED {'width': 128" in out
    assert "requested" in out and "H100 80GB (emulated)" in out
    assert "worst case $" in out, "the estimate is printed before the run"
    assert re.search(r"cost \$[0-9.]+ of a \$250\.00 budget", out)


def test_readme_deployment_answers_and_is_torn_down_by_its_with_block(pages: Pages) -> None:
    ran = pages.find(README, "ct.deploy(greeter)")
    assert ran.stdout.splitlines() == ["{'text': 'Hello, Ada'}"]
    shown = subprocess.run(
        [str(BIN / "cobalt"), "deployments", "list", "--all"],
        env=pages.envs[README],
        capture_output=True,
        text=True,
    )
    greeter = next(line for line in shown.stdout.splitlines() if line.startswith("greeter "))
    assert "STOPPED" in greeter.upper(), shown.stdout


def test_readme_serves_the_real_model_to_the_openai_client(pages: Pages) -> None:
    answer = pages.find(README, "ct.llm.example_model()").stdout.splitlines()
    assert len(answer) == 1 and "Paris" in answer[0], answer


def test_the_failure_example_names_the_task_and_reruns_it_locally(pages: Pages) -> None:
    out = pages.find(DOCS / "workflows.md", "TaskFailedError").stdout.splitlines()
    assert out == [
        "ratio exception",
        "ZeroDivisionError: division by zero",
        "reproduced locally",
    ]


def test_the_dispatch_example_waits_for_its_result(pages: Pages) -> None:
    out = pages.find(DOCS / "workflows.md", "ct.get_result(dispatch_id").stdout.splitlines()
    assert out[0] == "COMPLETED [0, 1, 4]"
    assert out[1].startswith("3 ")


def test_the_operators_example_computes_and_numbers_nodes_as_covalent(pages: Pages) -> None:
    out = pages.find(DOCS / "workflows.md", "count == 2").stdout.splitlines()
    assert out == ["[20, True]", "join_words"]


def test_covalent_style_executors_run_and_an_unconfigured_cluster_is_refused(
    pages: Pages,
) -> None:
    out = pages.find(DOCS / "executors.md", "ct.executor.LocalExecutor").stdout.splitlines()
    assert out[:2] == ["42 ['local', 'local']", "hello 42"]
    assert "matches no executor of this controller" in out[2]
    assert 'address = "tcp://10.0.0.5:8786"' in out


def test_the_redispatch_example_reuses_what_did_not_change(pages: Pages) -> None:
    out = pages.find(DOCS / "workflows.md", "ct.redispatch(").stdout.splitlines()
    assert out == [
        "6 {'args': [4], 'kwargs': {}}",
        "14 [('load', 'reused'), ('total_of_squares', 'ran')]",
    ]


def test_the_classifier_serves_streams_and_answers_plain_http(pages: Pages) -> None:
    lines = pages.find(DOCS / "deployments.md", "@classifier.endpoint").stdout.splitlines()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/classifier \['/predict', '/stream'\]", lines[0])
    assert lines[1] == "{'label': 'positive', 'score': 2.0}"
    words = [("good", 1.0), ("but", 0.0), ("awful", -2.0)]
    assert lines[2] == str([{"word": w, "score": s} for w, s in words]), "one value per yield"
    assert lines[3] == "200 {'label': 'negative', 'score': -2.0}", "plain HTTP with the token"
    assert len(lines) == 4


def test_curl_reaches_the_classifier_with_its_token(pages: Pages) -> None:
    out = pages.find(DOCS / "deployments.md", "curl -sS").stdout
    assert out.replace(" ", "") == '{"label":"positive","score":2.0}'


def test_the_command_line_tears_the_classifier_down(pages: Pages) -> None:
    cli = pages.find(DOCS / "deployments.md", "cobalt deployments teardown classifier").stdout
    assert "classifier" in cli
    after = pages.find(DOCS / "deployments.md", 'ct.get_deployment("classifier").status')
    assert after.stdout.splitlines() == ["stopped"]


def test_the_decorated_function_is_deployed_and_called(pages: Pages) -> None:
    assert pages.find(DOCS / "deployments.md", "@ct.deploy(cpus=1").stdout == "42\n"


def test_the_batched_endpoint_gives_each_caller_its_own_result(pages: Pages) -> None:
    out = pages.find(DOCS / "deployments.md", "ct.Batch").stdout
    assert out.splitlines() == ["[1.0, 1.0, 0.0]"]


def test_the_llm_example_streams_through_the_openai_client(pages: Pages) -> None:
    out = pages.find(DOCS / "llm.md", "capital of France").stdout
    answer, streamed, name = out.splitlines()
    assert "Paris" in answer, answer
    assert (streamed, name) == ("True", "smollm2")


def test_the_adapter_example_fine_tunes_deploys_and_answers_in_its_style(pages: Pages) -> None:
    out = pages.find(DOCS / "llm.md", "train_lora(base, PIRATE").stdout
    models, pirate, base = out.splitlines()
    assert models == "['smollm2', 'pirate']"
    assert pirate.startswith("pirate: Arr, the food is good"), pirate
    assert base.startswith("smollm2: ") and "Arr" not in base, base


def test_the_budget_example_estimates_and_bills_each_task(pages: Pages) -> None:
    out = pages.find(DOCS / "cost.md", "ct.estimate(sweep)").stdout
    assert "worst case $" in out
    number = r"[0-9.]+(?:e-\d+)?"
    assert re.fullmatch(rf"{number} \[{number}(, {number}){{3}}\]", out.splitlines()[-1]), out
