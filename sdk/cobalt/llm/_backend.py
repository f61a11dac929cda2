"""Where a model runs, how it is loaded, and how a draft is made from it.

Example:
    >>> resolve_backend("torch", object())
    'torch'
    >>> resolve_backend("tpu", object())
    Traceback (most recent call last):
    ...
    cobalt.SpecError: backend must be 'auto', 'torch' or 'vllm', not 'tpu'.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from typing import Any, Literal

import torch

from cobalt_common.errors import SpecError

Backend = Literal["auto", "torch", "vllm"]
_BACKENDS = ("auto", "torch", "vllm")


def vllm_usable() -> bool:
    """vLLM is installed and a CUDA GPU is present."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def resolve_backend(backend: str, model: Any) -> Literal["torch", "vllm"]:
    """The backend ``backend`` stands for, for this model."""
    if backend not in _BACKENDS:
        raise SpecError(f"backend must be 'auto', 'torch' or 'vllm', not {backend!r}.")
    if backend == "torch":
        return "torch"
    if backend == "vllm":
        if not vllm_usable():
            raise SpecError(
                "backend='vllm' needs the vllm package and a CUDA GPU; "
                "use backend='torch' (or 'auto') on this machine."
            )
        if not isinstance(model, str | os.PathLike):
            raise SpecError("backend='vllm' loads the model itself: pass its path, not a model.")
        return "vllm"
    return "vllm" if vllm_usable() and isinstance(model, str | os.PathLike) else "torch"


def load(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The model and tokenizer, read from a local path when ``model`` is one."""
    if not isinstance(model, str | os.PathLike):
        if tokenizer is None:
            raise SpecError("pass the model's tokenizer too: Engine(model, tokenizer).")
        return model, tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.fspath(model)
    if not os.path.isdir(path):
        raise SpecError(
            f"no model directory at {path!r}; pass a directory written by save_pretrained "
            "(models are never downloaded at run time)."
        )
    loaded = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return loaded, tokenizer


def int8_copy(model: Any) -> Any:
    """A copy of ``model`` whose linear layers run in int8 (per-channel weights, CPU)."""
    if next(model.parameters()).device.type != "cpu":
        raise SpecError(
            "draft='int8' makes an int8 copy for CPUs; on a GPU pass a smaller draft model, "
            "or a bf16 copy of the target."
        )
    with warnings.catch_warnings():  # torch marks its eager int8 modules as deprecated
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(model), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
