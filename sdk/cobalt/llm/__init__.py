"""cobalt's model stack for service code: an LLM engine, an embedder, and OpenAI-compatible routes.

Names are imported on first use, so ``import cobalt`` (and defining a
service) never loads torch; only a replica that builds an engine does.

Example:
    >>> import cobalt as ct
    >>> model, tokenizer = ct.llm.random_model(seed=0)
    >>> engine = ct.llm.Engine(model, tokenizer)
    >>> engine.generate("Hi", max_tokens=3, temperature=0).completion_tokens
    3
    >>> engine.close()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cobalt.llm._types import Chunk, Completion, SamplingParams

if TYPE_CHECKING:
    from cobalt.llm._embedder import Embedder
    from cobalt.llm._engine import Engine
    from cobalt.llm._example import example_model
    from cobalt.llm._finetune import TrainedAdapter, train_lora
    from cobalt.llm._openai import openai_routes
    from cobalt.llm._tiny import random_model, random_tokenizer

_LAZY = {
    "Embedder": "cobalt.llm._embedder",
    "Engine": "cobalt.llm._engine",
    "example_model": "cobalt.llm._example",
    "train_lora": "cobalt.llm._finetune",
    "TrainedAdapter": "cobalt.llm._finetune",
    "openai_routes": "cobalt.llm._openai",
    "random_model": "cobalt.llm._tiny",
    "random_tokenizer": "cobalt.llm._tiny",
}

__all__ = [
    "Chunk",
    "Completion",
    "Embedder",
    "Engine",
    "SamplingParams",
    "TrainedAdapter",
    "example_model",
    "openai_routes",
    "random_model",
    "random_tokenizer",
    "train_lora",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cobalt.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
