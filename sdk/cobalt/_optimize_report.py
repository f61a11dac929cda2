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
    measured."""
    fidelity_metric: FidelityMetric | None = None
    fidelity: float | None = None
    """The value ``min_fidelity`` is checked against: min cosine similarity or top-1 agreement."""
    cosine_min: float | None = None
    cosine_mean: float | None = None
    top1_agreement: float | None = None
    samples: int = 0
    """How many output rows (or positions, for ``top1``) the fidelity is measured over."""

    @property
    def size_ratio(self) -> float:
        """How many times smaller the optimized model is (below 1: larger)."""
        return self.size_bytes_before / self.size_bytes_after if self.size_bytes_after else 0.0

    @property
    def speedup(self) -> float | None:
        """How many times faster per calibration input (below 1: slower); None if not measured."""
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
        return rows

    def _notes(self) -> list[str]:
        return [f"applied: {a}" for a in self.applied] + [f"skipped: {s}" for s in self.skipped]

    def __str__(self) -> str:
        lines = [
            f"ct.optimize: {self.describe()}",
            format_table(self._HEADER, self._rows(), right=(1, 2, 3)),
            f"fidelity: {self.fidelity_text()}",
            *self._notes(),
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [tuple(h.esc(c) for c in row) for row in self._rows()]
        notes = "".join(f"<li>{h.esc(n)}</li>" for n in self._notes())
        return (
            f"<div><div><b>ct.optimize</b>: {h.esc(self.describe())}</div>"
            f"{h.table(self._HEADER, rows, right=(1, 2, 3))}"
            f"<div>fidelity: {h.esc(self.fidelity_text())}</div>"
            f'<ul style="margin:4px 0">{notes}</ul></div>'
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))
