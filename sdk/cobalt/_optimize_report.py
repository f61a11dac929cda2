"""What ``ct.optimize`` did to a model, and what it cost in size, speed and fidelity.

Plain data with no torch import, so a report can be printed, pickled and shown
in a notebook anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cobalt import _html as h
from cobalt._result import format_table

FidelityMetric = Literal["cosine", "top1"]
FidelitySource = Literal["calibration", "evaluation"]


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1000, as disk sizes are usually given)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


def _ratio(before: float | None, after: float | None, better: str, worse: str) -> str:
    """``'2.31x smaller'``, or ``'1.10x larger'`` when ``after`` is the bigger one."""
    if not before or not after:
        return "-"
    ratio = before / after
    if abs(ratio - 1) < 0.005:
        return "about the same"
    return f"{ratio:.2f}x {better}" if ratio >= 1 else f"{1 / ratio:.2f}x {worse}"


def _speed(name: str, ratio: float) -> str:
    """``'decode step 0.79x: slower'``: the ratio of before to after, and what it means."""
    verdict = "about the same" if abs(ratio - 1) < 0.005 else "faster" if ratio > 1 else "slower"
    return f"{name} {ratio:.2f}x: {verdict}"


@dataclass(frozen=True, slots=True)
class CausalLMFigures:
    """What serving a causal LM sees: prefill and decode-step latency, next-token agreement.

    A model that generates text runs one forward pass per new token, reading
    the KV cache of what came before, so generation is bound by that decode
    step, whose speed a whole-prompt pass does not show (int8 kernels that win
    on a prompt's matmuls can lose on one token's). Both models run each
    prompt (each row of each measured input, its padding removed) at batch 1:
    a prefill, one forward over the prompt with ``use_cache=True``; then
    greedy decoding, one token per step on the KV cache of the step
    before. Latencies are medians, each prompt or step keeping its fastest
    of the repeats.
    """

    prompts: int
    """Prompts measured: every row of every input of ``fidelity_source``."""
    prefill_ms_before: float | None
    prefill_ms_after: float | None
    """Median milliseconds of a prefill over the prompts; None if it failed."""
    positions: int = 0
    next_token_agreement: float | None = None
    """Fraction of the ``positions`` (every token of every prompt) where the argmax of the
    optimized model's prefill logits, its next token, is the original's."""
    decode_ms_before: float | None = None
    decode_ms_after: float | None = None
    """Median milliseconds of one decode step (one new token, batch 1, with the KV cache)
    over ``decode_steps`` steps; None if not measured (``skipped`` says why)."""
    decode_steps: int = 0
    greedy_prompts: int = 0
    """Prompts (the first ones) continued greedily by both models."""
    greedy_tokens: int = 0
    """Tokens each continuation has: the prefill's and one per decode step."""
    greedy_agreement: float | None = None
    """Of all continued tokens, the fraction before each prompt's first difference."""
    greedy_identical: int = 0
    """Prompts whose greedy continuation is the same token for token."""

    @property
    def decode_speedup(self) -> float | None:
        """How many times faster a decode step is (below 1: slower); None if not measured."""
        if not self.decode_ms_before or not self.decode_ms_after:
            return None
        return self.decode_ms_before / self.decode_ms_after

    @property
    def prefill_speedup(self) -> float | None:
        """How many times faster a prefill is (below 1: slower); None if not measured."""
        if not self.prefill_ms_before or not self.prefill_ms_after:
            return None
        return self.prefill_ms_before / self.prefill_ms_after

    def speed_text(self) -> str:
        """``'decode step 0.79x: slower (generation speed), prefill 1.20x: faster'``."""
        parts = []
        if self.decode_speedup is not None:
            parts.append(_speed("decode step", self.decode_speedup) + " (generation speed)")
        else:
            parts.append("decode step not measured (see skipped), so no speedup is given")
        if self.prefill_speedup is not None:
            parts.append(_speed("prefill", self.prefill_speedup) + " (time to first token)")
        return ", ".join(parts)

    def method_text(self) -> str:
        """How the figures were measured, in one line."""
        plural = "s" if self.prompts != 1 else ""
        text = f"{self.prompts} prompt{plural} at batch 1, each prefilled with use_cache=True"
        if self.greedy_prompts:
            which = f"the first {self.greedy_prompts}"
            if self.greedy_prompts == self.prompts:
                which = "each"
            text += (
                f", {which} then decoded greedily to {self.greedy_tokens} tokens, one decode "
                "step per token after the first"
            )
        return text + f"; next-token agreement over all {self.positions} prompt positions"

    def rows(self, source: str) -> list[tuple[str, str, str, str]]:
        """The table rows: latencies with their ratios, then agreements."""
        rows = [
            (
                f"prefill (median of {self.prompts})",
                _ms(self.prefill_ms_before),
                _ms(self.prefill_ms_after),
                _ratio(self.prefill_ms_before, self.prefill_ms_after, "faster", "slower"),
            )
        ]
        if self.decode_ms_before is not None or self.decode_ms_after is not None:
            rows.append(
                (
                    f"decode step (median of {self.decode_steps})",
                    _ms(self.decode_ms_before),
                    _ms(self.decode_ms_after),
                    _ratio(self.decode_ms_before, self.decode_ms_after, "faster", "slower"),
                )
            )
        if self.next_token_agreement is not None:
            rows.append(
                (
                    f"next-token agreement ({source})",
                    "1.0000",
                    f"{self.next_token_agreement:.4f}",
                    f"{self.positions} positions",
                )
            )
        if self.greedy_agreement is not None:
            rows.append(
                (
                    f"greedy {self.greedy_tokens} tokens ({source})",
                    "1.0000",
                    f"{self.greedy_agreement:.4f}",
                    f"{self.greedy_identical} of {self.greedy_prompts} identical",
                )
            )
        return rows


@dataclass(frozen=True, slots=True)
class OptimizationReport:
    """Size, latency and fidelity of an optimized model next to the original's.

    Returned by :func:`cobalt.optimize` with the model, and attached to
    :class:`cobalt.FidelityError` as ``exc.report``.

    Fidelity compares the first tensor of each output (a tuple's first
    element, a dict's or ``ModelOutput``'s first value, such as
    ``last_hidden_state``). With ``cosine``, a 3-D output ``(batch, tokens,
    hidden)`` is mean-pooled over its tokens (weighted by the input's
    ``attention_mask`` when the calibration item has one) and each row of the
    batch is one sample; a 2-D output gives one sample per row, and any other
    shape is flattened per batch row. With ``top1``, the sample is the argmax
    of the last dimension at every position.

    Example:
        >>> model, report = ct.optimize(net, quantize="int8", calibration=xs)  # doctest: +SKIP
        >>> report.size_ratio, report.speedup, report.fidelity  # doctest: +SKIP
        (3.9, 2.1, 0.9987)
    """

    quantize: str | None
    sparsity: float
    compiled: bool
    """Whether the returned model is the ``torch.compile`` one (see ``skipped`` when not)."""
    applied: tuple[str, ...]
    """Each step that changed the model, in the order it ran."""
    skipped: tuple[str, ...]
    """What was asked for or left alone and why (a compile that fell back, float layers)."""
    size_bytes_before: int
    size_bytes_after: int
    """Bytes of the serialized ``state_dict`` (``torch.save``), packed int8 weights included."""
    calibration_items: int = 0
    evaluation_items: int = 0
    """Held-out inputs passed as ``evaluation=``; 0 when the figures are on calibration."""
    fidelity_source: FidelitySource | None = None
    """Which inputs latency and fidelity were measured on: ``"evaluation"`` (held out,
    never used to tune the optimization) or ``"calibration"`` (the ones it was tuned on,
    so an optimistic figure); None when not measured."""
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    """Median milliseconds per input of ``fidelity_source``, after a warm-up; None if not
    measured, and for a causal LM, whose speed is in ``causal_lm`` instead."""
    fidelity_metric: FidelityMetric | None = None
    fidelity: float | None = None
    """The value ``min_fidelity`` is checked against: min cosine similarity or top-1 agreement."""
    cosine_min: float | None = None
    cosine_mean: float | None = None
    top1_agreement: float | None = None
    samples: int = 0
    """How many output rows (or positions, for ``top1``) the fidelity is measured over."""
    causal_lm: CausalLMFigures | None = None
    """For a model that generates text (a ``transformers`` ``*ForCausalLM``) measured on
    token ids: prefill and decode-step latency and next-token agreement; else None."""

    @property
    def size_ratio(self) -> float:
        """How many times smaller the optimized model is (below 1: larger)."""
        return self.size_bytes_before / self.size_bytes_after if self.size_bytes_after else 0.0

    @property
    def speedup(self) -> float | None:
        """How many times faster per input (below 1: slower); None if not measured.

        For a causal LM, how many times faster a decode step is, which is what
        generating text is bound by (never a whole-prompt pass's ratio).
        """
        if self.causal_lm is not None:
            return self.causal_lm.decode_speedup
        if not self.latency_ms_before or not self.latency_ms_after:
            return None
        return self.latency_ms_before / self.latency_ms_after

    def describe(self) -> str:
        """What was asked for, in one line: ``'int8 (per-channel), sparsity 0.50, compile'``."""
        parts = [f"{self.quantize}" if self.quantize else "no quantization"]
        if self.sparsity:
            parts.append(f"sparsity {self.sparsity:.2f}")
        if self.compiled:
            parts.append("compiled")
        return ", ".join(parts)

    @property
    def measured_items(self) -> int:
        """How many inputs latency and fidelity were measured on."""
        if self.fidelity_source == "evaluation":
            return self.evaluation_items
        return self.calibration_items if self.fidelity_source else 0

    def fidelity_text(self) -> str:
        """``'min cosine similarity 0.9913, mean 0.9931 over 64 samples of 64 held-out
        (evaluation) inputs'``, or ``'not measured'``."""
        source = {
            "evaluation": f"{self.evaluation_items} held-out (evaluation) inputs",
            "calibration": f"the {self.calibration_items} calibration inputs it was tuned on",
        }.get(self.fidelity_source or "", "")
        if self.fidelity_metric == "cosine":
            return (
                f"min cosine similarity {self.cosine_min:.4f}, mean {self.cosine_mean:.4f} "
                f"over {self.samples} samples of {source}"
            )
        if self.fidelity_metric == "top1":
            return (
                f"top-1 agreement {self.top1_agreement:.4f} over {self.samples} positions "
                f"of {source}"
            )
        return "not measured (no calibration or evaluation inputs)"

    _HEADER = ("", "before", "after", "change")

    def _rows(self) -> list[tuple[str, str, str, str]]:
        rows = [
            (
                "size",
                format_bytes(self.size_bytes_before),
                format_bytes(self.size_bytes_after),
                _ratio(self.size_bytes_before, self.size_bytes_after, "smaller", "larger"),
            )
        ]
        if self.latency_ms_before is not None:
            rows.append(
                (
                    f"latency (median of {self.measured_items})",
                    _ms(self.latency_ms_before),
                    _ms(self.latency_ms_after),
                    _ratio(self.latency_ms_before, self.latency_ms_after, "faster", "slower"),
                )
            )
        if self.fidelity_metric is not None:
            name = "min cosine" if self.fidelity_metric == "cosine" else "top-1 agreement"
            source = "held-out" if self.fidelity_source == "evaluation" else "calibration"
            name = f"{name} ({source})"
            rows.append((name, "1.0000", f"{self.fidelity:.4f}", f"{self.samples} samples"))
        if self.causal_lm is not None:
            source = "held-out" if self.fidelity_source == "evaluation" else "calibration"
            rows[1:1] = self.causal_lm.rows(source)
        return rows

    def _summary(self) -> list[str]:
        """The lines under the table: the fidelity, and a causal LM's speed."""
        lines = [f"fidelity: {self.fidelity_text()}"]
        if self.causal_lm is not None:
            lines += [
                f"speed: {self.causal_lm.speed_text()}",
                f"causal LM: {self.causal_lm.method_text()}",
            ]
        return lines

    def _notes(self) -> list[str]:
        return [f"applied: {a}" for a in self.applied] + [f"skipped: {s}" for s in self.skipped]

    def __str__(self) -> str:
        lines = [
            f"ct.optimize: {self.describe()}",
            format_table(self._HEADER, self._rows(), right=(1, 2, 3)),
            *self._summary(),
            *self._notes(),
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [tuple(h.esc(c) for c in row) for row in self._rows()]
        summary = "".join(f"<div>{h.esc(line)}</div>" for line in self._summary())
        notes = "".join(f"<li>{h.esc(n)}</li>" for n in self._notes())
        return (
            f"<div><div><b>ct.optimize</b>: {h.esc(self.describe())}</div>"
            f"{h.table(self._HEADER, rows, right=(1, 2, 3))}{summary}"
            f'<ul style="margin:4px 0">{notes}</ul></div>'
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))
