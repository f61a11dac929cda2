"""``@ct.service``, ``@svc.endpoint`` and ``ct.deploy`` keep signatures for type checkers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import mypy_by_comment

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = textwrap.dedent(
    """
    from collections.abc import Iterator

    import cobalt as ct


    @ct.service(gpu="l4", memory="16GB", min_replicas=0, max_replicas=8)
    def classifier(model_name: str, size: int = 1) -> dict[str, object]:
        return {"model": model_name}


    @ct.service
    def bare() -> dict[str, int]:
        return {}


    @classifier.endpoint("/predict")
    def predict(model: object, text: str) -> dict[str, str]:
        return {"label": text}


    @classifier.endpoint("/stream", streaming=True)
    def stream(text: str) -> Iterator[str]:
        yield text


    @classifier.endpoint("/embed", batch=ct.Batch(max_size=16, max_wait_ms=2))
    def embed(model: object, text: list[str]) -> list[list[float]]:
        return [[0.0] for _ in text]


    @ct.deploy(cpus=2, min_replicas=1)
    def double(x: int) -> int:
        return 2 * x


    reveal_type(classifier)  # service
    reveal_type(bare)  # bare service
    reveal_type(predict)  # endpoint
    reveal_type(embed)  # batched endpoint
    reveal_type(ct.deploy(classifier))  # deployer
    reveal_type(ct.deploy(classifier, wait=False)("small"))  # deploy call
    reveal_type(double)  # deployed function
    ct.deploy(classifier)(3)  # wrong init argument
    ct.service(gpux="h100")  # unknown option
    classifier.endpoint("/e", batch=32)  # batch not a Batch
    """
)


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run mypy on the snippet once; map each line's trailing comment to mypy's message."""
    return mypy_by_comment(SNIPPET, tmp_path_factory.mktemp("typing"))


@pytest.mark.parametrize(
    ("line", "revealed"),
    [
        ("service", "cobalt._service.Service[[model_name: str, size: int =]]"),
        ("bare service", "cobalt._service.Service[[]]"),
        ("endpoint", "def (model: object, text: str) -> dict"),
        ("batched endpoint", "def (model: object, text: list[str]) -> list[list[float]]"),
        ("deployer", "def (model_name: str, size: int =) -> cobalt._deployment.Deployment"),
        ("deploy call", '"cobalt._deployment.Deployment"'),
        ("deployed function", '"cobalt._deployment.Deployment"'),
    ],
)
def test_decorators_keep_the_signature(
    mypy_report: dict[str, str], line: str, revealed: str
) -> None:
    assert revealed in mypy_report[line]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("wrong init argument", 'incompatible type "int"; expected "str"'),
        ("unknown option", 'Unexpected keyword argument "gpux"'),
        ("batch not a Batch", 'incompatible type "int"; expected "Batch | None"'),
    ],
)
def test_type_checkers_catch_misuse(mypy_report: dict[str, str], line: str, error: str) -> None:
    assert error in mypy_report[line]


def test_the_rest_of_the_snippet_type_checks_cleanly(mypy_report: dict[str, str]) -> None:
    assert set(mypy_report) == {
        "service",
        "bare service",
        "endpoint",
        "batched endpoint",
        "deployer",
        "deploy call",
        "deployed function",
        "wrong init argument",
        "unknown option",
        "batch not a Batch",
    }
