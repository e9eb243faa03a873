"""Plain-text tables for the command line: rows of dicts, columns aligned, numbers right."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import typer


def cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def echo_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """Print `rows` (the columns of the first row, then any others) as aligned text."""
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    text = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    numeric = [
        all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in cols
    ]

    def line(vals: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(vals, widths, numeric, strict=True)
        )

    typer.echo(line(cols).rstrip())
    for t in text:
        typer.echo(line(t).rstrip())
