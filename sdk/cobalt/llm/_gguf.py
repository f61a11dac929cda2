"""Reading a model from a GGUF file, once: later reads take the converted copy.

``transformers`` reads GGUF by parsing the whole file (its metadata three
times: for the config, the tokenizer and the weights) and dequantizing every
tensor, about 15 to 40 s for a 135M-parameter model on 2 cores. A replica
that scales up from zero pays that on every start. So the first read saves
the result, in ``transformers``' own format, under a folder named by the
file's sha256 in ``COBALT_MODEL_CACHE`` (by default
``~/.cache/cobalt/models``); later reads of the same bytes load that folder
in about a second. ``COBALT_MODEL_CACHE=off`` turns the copy off. A cache
that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

_CHUNK = 1 << 20


def cache_root() -> Path | None:
    """Where converted models are kept, or ``None`` when keeping them is off."""
    configured = os.environ.get("COBALT_MODEL_CACHE", "")
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "cobalt" / "models"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_gguf(path: str, tokenizer: Any) -> tuple[Any, Any]:
    """The model (fp32) and tokenizer in the GGUF file at ``path``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = cache_root()
    saved = root / file_sha256(path) if root is not None else None
    if saved is not None and (saved / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(saved, local_files_only=True)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(saved, local_files_only=True)
        return model, tokenizer
    folder, file = os.path.split(os.path.abspath(path))
    options: dict[str, Any] = {"gguf_file": file, "local_files_only": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **options)
        read = AutoTokenizer.from_pretrained(folder, **options)
    if saved is not None:
        _keep(model, read, saved)
    return model, tokenizer if tokenizer is not None else read


def _keep(model: Any, tokenizer: Any, saved: Path) -> None:
    """Save the converted model where the next read finds it; skip on any failure.

    ``transformers`` marks a model read from GGUF as quantized and refuses to
    save it, though its weights are plain fp32 by then; so the weights are
    written with ``safetensors`` (shared tensors once) beside a config
    without that mark.
    """
    from safetensors.torch import save_model

    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=saved.parent))
    except OSError:
        return
    try:
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"))
        tokenizer.save_pretrained(staging)
        os.replace(staging, saved)  # atomic: a reader sees the whole folder or none
    except Exception:  # a cache that cannot be written costs only the next start's time
        pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
