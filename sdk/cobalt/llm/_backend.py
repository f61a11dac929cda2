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
import re
import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch

from cobalt.llm._weights import WeightFormat
from cobalt_common.errors import SpecError

if TYPE_CHECKING:
    from cobalt.llm._llama import FastLlama

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
    """The model and tokenizer, read from a local folder or GGUF file when ``model`` is one."""
    if not isinstance(model, str | os.PathLike):
        if tokenizer is None:
            raise SpecError("pass the model's tokenizer too: Engine(model, tokenizer).")
        return model, tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.fspath(model)
    if path.endswith(".gguf") and os.path.isfile(path):
        missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
        if missing:
            raise SpecError(
                f"reading a .gguf file needs {' and '.join(missing)}: pip install 'cobalt[models]'."
            )
        from cobalt.llm._gguf import load_gguf

        return load_gguf(path, tokenizer)
    if not os.path.isdir(path):
        raise SpecError(
            f"no model folder or .gguf file at {path!r}; pass a folder written by "
            "save_pretrained or a GGUF file (models are never downloaded at run time)."
        )
    loaded = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return loaded, tokenizer


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")


def checked_name(name: object) -> str:
    """A model name clients may see: letters, digits and ``._:+-``, never a path."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(
            f"name must be 1 to 128 letters, digits and '._:+-', starting with a letter or "
            f"digit (a model name, not a path), not {name!r}."
        )
    return name


def model_name(model: Any) -> str:
    """The name a model is served under by default: its folder's or file's name, or its type.

    >>> model_name("/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    'SmolLM2-135M-Instruct.Q4_1'
    """
    if isinstance(model, str | os.PathLike):
        source = os.fspath(model)
    else:
        config = getattr(model, "config", None)
        source = str(getattr(config, "_name_or_path", "") or getattr(config, "model_type", ""))
    base = os.path.basename(source.rstrip("/\\"))
    base = base[: -len(".gguf")] if base.endswith(".gguf") else base
    cleaned = re.sub(r"[^A-Za-z0-9._:+-]", "-", base).lstrip("._:+-")[:128]
    return cleaned or "model"


def fast_forward(model: Any, weights: WeightFormat) -> FastLlama | None:
    """cobalt's own forward pass for ``model`` in ``weights``, where it can run one.

    Raises:
        SpecError: a low-bit format was asked for a model that cannot use one.
    """
    from cobalt.llm._llama import FastLlama, unsupported

    reason = unsupported(model)
    if reason is None:
        return FastLlama(model, weights)
    if weights != "fp32":
        raise SpecError(
            f"weights={weights!r} needs a Llama-family model on a CPU, and {reason}; "
            "use weights='fp32'."
        )
    return None


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
