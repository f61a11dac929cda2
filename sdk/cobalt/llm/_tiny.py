"""``ct.llm.random_model``: a small causal LM with seeded random weights.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in a few
milliseconds on a built-in text, and the model is built from a config and
initialized from ``seed``. Its text is meaningless, but its speed, memory
and determinism are those of a real model of its size, which makes it the
model to test serving code with.

Example:
    >>> model, tokenizer = random_model(seed=0)
    >>> tokenizer.decode(tokenizer("héllo wörld")["input_ids"], skip_special_tokens=True)
    'héllo wörld'
"""

from __future__ import annotations

from typing import Any

import torch

from cobalt_common.errors import SpecError

_TEXT = """
cobalt runs each Python function on the hardware it needs. A lattice composes
electrons into a workflow; the controller places every task on the cheapest
executor able to run it and records what it cost. Services become endpoints
that scale with their traffic, down to zero when nobody calls them. The model
stack batches requests, quantizes weights, and decodes many streams at once.
The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { }
Hello! How are you today? I am fine, thank you. What is the weather like?
def main(): return sum(x * x for x in range(10))
"""
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_SPECIAL = ["<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
_SIZES = {
    "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4},
    "small": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8},
}


def random_tokenizer(vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer with a chat template, trained on a built-in text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_TEXT] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe, bos_token="<|bos|>", eos_token="<|end|>", pad_token="<|end|>"
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def random_model(size: str = "tiny", *, seed: int = 0, max_length: int = 2048) -> tuple[Any, Any]:
    """A Llama-style causal LM with random weights, and its tokenizer.

    Args:
        size: ``"tiny"`` (4 layers of 256, about 3M parameters) or
            ``"small"`` (8 layers of 512, about 26M).
        seed: the same seed gives the same weights.
        max_length: the longest sequence (prompt and output) it reads.
    """
    if size not in _SIZES:
        raise SpecError(f"size must be one of {sorted(_SIZES)}, not {size!r}.")
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = random_tokenizer()
    hidden = _SIZES[size]["hidden_size"]
    shape: dict[str, Any] = dict(_SIZES[size])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **shape,
    )
    config._name_or_path = f"cobalt/random-llama-{size}"
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model: Any = LlamaForCausalLM(config)
        model.eval()
    finally:
        torch.random.set_rng_state(state)
    return model, tokenizer
