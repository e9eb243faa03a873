"""The compare view's figures (the Jobs page's `?compare=`): runs overlaid against tokens
seen, and the cost each run spent to reach the target eval loss. Pure functions of plain
data (`core.queries.RunCurves`), tested without a browser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from components.charts import LAYOUT, loss_lr_speed, lr_axis

RUN_COLOURS = (
    "#4f46e5",
    "#f59e0b",
    "#16a34a",
    "#dc2626",
    "#0891b2",
    "#9333ea",
)  # one per compared run


SPREAD_FOR_LOG_X = 20  # runs whose lengths in tokens differ this much share a log axis
FEW_POINTS = 20  # series shorter than this show their points


def compare_curves(runs: Sequence[Any]) -> go.Figure:
    """Runs overlaid against tokens seen: train loss (line) and eval loss (dashed, markers)
    on top, learning rate and tokens/s underneath; one colour per run. `runs` are
    `core.queries.RunCurves` (label, tokens, loss, lr, tokens_per_s, eval_tokens, eval_loss)."""
    fig = loss_lr_speed("Loss (solid: train, dashed: eval)")
    for i, r in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for row, trace in _run_traces(r, colour):
            fig.add_trace(trace, row, 1)
    fig.update_xaxes(title_text="tokens seen (loss-carrying)", row=3, col=1)
    lr_axis(fig, (v for r in runs for v in r.lr))
    ends = [max([*r.tokens, *r.eval_tokens]) for r in runs if r.tokens or r.eval_tokens]
    if ends and min(ends) > 0 and max(ends) / min(ends) >= SPREAD_FOR_LOG_X:
        # a short run beside a long one would be a few pixels at the origin on a linear axis
        fig.update_xaxes(type="log")
        fig.update_xaxes(title_text="tokens seen (loss-carrying, log scale)", row=3, col=1)
    fig.update_layout(
        height=600,
        title="Runs against tokens seen",
        legend=dict(orientation="h", y=-0.12),
        **LAYOUT,
    )
    return fig


def _run_traces(r: Any, colour: str) -> list[tuple[int, go.Scatter]]:
    """(subplot row, trace) of one run: train and eval loss, learning rate, tokens/s."""

    def series(x: Any, y: Any, name: str, **kw: Any) -> go.Scatter:
        # a line needs two points: a short run's few points are drawn as markers too
        kw.setdefault("mode", "lines+markers" if len(x) < FEW_POINTS else "lines")
        kw.setdefault("line", dict(color=colour))
        return go.Scatter(
            x=list(x), y=list(y), name=f"{r.label} {name}", legendgroup=r.job_id, **kw
        )

    traces = [(1, series(r.tokens, r.loss, "train"))]
    if r.eval_tokens:
        dashed = dict(color=colour, dash="dash")
        traces.append(
            (1, series(r.eval_tokens, r.eval_loss, "eval", mode="lines+markers", line=dashed))
        )
    traces.append((2, series(r.tokens, r.lr, "lr", showlegend=False)))
    traces.append((3, series(r.tokens, r.tokens_per_s, "tokens/s", showlegend=False)))
    return traces


def cost_to_target(
    labels: Sequence[str], costs: Sequence[float | None], target: float | None
) -> go.Figure:
    """Dollars each run spent to first reach the target eval loss; a run that never did is
    drawn as an empty bar labelled "not reached" ("no target" for every run without one)."""
    shown = [c if c is not None else 0.0 for c in costs]
    missing = "not reached" if target is not None else "no target"
    text = [f"${c:.4f}" if c is not None else missing for c in costs]
    colours = [RUN_COLOURS[i % len(RUN_COLOURS)] for i in range(len(labels))]
    fig = go.Figure(
        go.Bar(
            x=list(labels),
            y=shown,
            text=text,
            textposition="outside",
            marker_color=colours,
            hovertemplate="%{x}: %{text}<extra></extra>",
            cliponaxis=False,
        )
    )
    title = "Cost to reach eval loss " + ("–" if target is None else f"{target:.4f}")
    # dollars from zero: with no bar above it plotly centres the axis on 0 (down to $-1)
    fig.update_layout(
        height=300, title=title, yaxis=dict(tickprefix="$", rangemode="nonnegative"), **LAYOUT
    )
    fig.update_xaxes(type="category")
    return fig
