"""HTML for notebooks: what ``Result``, ``Estimate`` and electrons look like in a cell.

Plain tables with inline styles, so they read the same in Jupyter, VS Code and
exported notebooks; every value is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

STATUS_COLORS = {
    "COMPLETED": "#2e7d32",
    "RUNNING": "#1565c0",
    "PENDING": "#757575",
    "NEW": "#757575",
    "FAILED": "#c62828",
    "TIMED_OUT": "#c62828",
    "CANCELLED": "#6d4c41",
    "SKIPPED": "#9e9e9e",
    "BUDGET_EXCEEDED": "#ef6c00",
    "ACTIVE": "#2e7d32",
    "STARTING": "#1565c0",
    "STOPPED": "#6d4c41",
}
_CELL = "padding:2px 10px;text-align:{align};white-space:nowrap;border-bottom:1px solid #ddd"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def badge(status: str) -> str:
    """A status as a small coloured label."""
    color = STATUS_COLORS.get(status, "#757575")
    return (
        f'<span style="background:{color};color:#fff;border-radius:8px;padding:0 7px;'
        f'font-size:0.85em;font-weight:600">{esc(status.lower())}</span>'
    )


def emulated_tag() -> str:
    return (
        '<span style="border:1px solid #e7c57d;background:#fff7e3;color:#8a6100;'
        'border-radius:4px;padding:0 4px;font-size:0.8em" '
        'title="Emulated GPUs are priced as the GPUs they stand for">emulated</span>'
    )


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[int] = (),
    footer: Sequence[str] | None = None,
) -> str:
    """A table of already-escaped HTML cells; columns in ``right`` align right."""

    def cells(values: Sequence[str], tag: str) -> str:
        return "".join(
            f'<{tag} style="{_CELL.format(align="right" if i in right else "left")}">{v}</{tag}>'
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    foot = f"<tfoot><tr>{cells(footer, 'th')}</tr></tfoot>" if footer else ""
    return (
        '<table style="border-collapse:collapse;font-size:0.9em">'
        f"<thead><tr>{cells([esc(h) for h in header], 'th')}</tr></thead>"
        f"<tbody>{body}</tbody>{foot}</table>"
    )


def pre(text: str) -> str:
    return (
        '<pre style="white-space:pre-wrap;background:#fdecea;color:#611a15;padding:8px;'
        f'border-radius:4px;max-height:24em;overflow:auto">{esc(text)}</pre>'
    )
