"""Plotly figures built from plain data. Pure functions: no streamlit, no database, so
every chart can be tested by looking at its traces.

`shared_figure(build, *args)` builds a figure once per process for the same (hashable)
arguments: building one costs tens of milliseconds (plotly validates its template on
every figure), which many sessions opening the same page would pay again and again. The
figure it returns is shared by every session: draw it, never change it.

Every figure carries `TEMPLATE`: Plotly's "plotly_white" cut to what these figures draw
(cartesian axes, bar and scatter traces). A figure holds its whole template, and the full
one is about 7 KB of JSON: most of a small figure, sent again each time the figure changes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

ACCENT = "#4f46e5"
EVAL = "#f59e0b"
MUTED = "#94a3b8"
BAD = "#dc2626"
GOOD = "#16a34a"

# What "plotly_white" holds for other kinds of figure (3-D scenes, maps, polar and ternary
# axes, colour scales) and for trace types none of these figures uses.
_UNUSED_LAYOUT = ("polar", "ternary", "scene", "geo", "mapbox", "coloraxis", "colorscale")
TRACE_TYPES = ("bar", "scatter")


def _slim_template(base: str) -> go.layout.Template:
    """Plotly's `base` template with only the parts these figures use (see the module)."""
    full = pio.templates[base].to_plotly_json()
    layout = {k: v for k, v in full["layout"].items() if k not in _UNUSED_LAYOUT}
    data = {k: v for k, v in full["data"].items() if k in TRACE_TYPES}
    return go.layout.Template(layout=layout, data=data)


# Named on every figure: Streamlit sets plotly's process-wide default to its own template
# when it loads, so a figure that names none would depend on the import order.
TEMPLATE = _slim_template("plotly_white")
LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template=TEMPLATE)


_SHARED: OrderedDict[Any, go.Figure] = OrderedDict()
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 256


def shared_figure(build: Callable[..., go.Figure], *args: Any, **kwargs: Any) -> go.Figure:
    """`build(*args, **kwargs)`, built once per process for equal arguments (mappings and
    sequences compared by value, in order); the newest 256 are kept (see the module)."""
    key = (build.__module__, build.__qualname__, _frozen(args), _frozen(kwargs))
    with _SHARED_LOCK:
        if key in _SHARED:
            _SHARED.move_to_end(key)
            return _SHARED[key]
    fig = build(*args, **kwargs)  # outside the lock: two sessions may both build it once
    with _SHARED_LOCK:
        _SHARED[key] = fig
        while len(_SHARED) > _SHARED_MAX:
            _SHARED.popitem(last=False)
    return fig


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return ("map", tuple((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("seq", tuple(_frozen(v) for v in value))
    return value


def sparkline(values: Sequence[float], *, height: int = 60) -> go.Figure:
    """A bare line of the loss, for a running job's card."""
    fig = go.Figure(
        go.Scatter(y=list(values), mode="lines", line=dict(color=ACCENT, width=2), hoverinfo="y")
    )
    fig.update_layout(
        height=height,
        margin=dict(l=0, r=0, t=0, b=0),
        showlegend=False,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        template=TEMPLATE,
    )
    return fig


def loss_lr_speed(loss_title: str) -> go.Figure:
    """Three panels sharing the x axis: loss on top, learning rate and tokens/s under it."""
    return make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.6, 0.2, 0.2],
        vertical_spacing=0.06,
        subplot_titles=(loss_title, "Learning rate", "Tokens/s"),
    )


def lr_axis(fig: go.Figure, lr: Iterable[float | None]) -> None:
    """The learning-rate panel (row 2 of `loss_lr_speed`) from zero, in the notation the
    Learning rate metric uses (2.00e-04): a constant rate was drawn as "0" on a -1..1 axis."""
    top = max((v for v in lr if v is not None), default=0.0)
    if top > 0:
        fig.update_yaxes(range=[0, top * 1.1], tickformat=".1e", row=2, col=1)


def training_curves(
    step: Sequence[int],
    loss: Sequence[float | None],
    eval_step: Sequence[int],
    eval_loss: Sequence[float],
    lr: Sequence[float | None],
    tokens_per_s: Sequence[float | None],
    *,
    downsampled: bool = False,
) -> go.Figure:
    """Loss and eval loss over steps, with learning rate and tokens/s underneath."""
    fig = loss_lr_speed("Loss")
    fig.add_trace(
        go.Scatter(
            x=list(step), y=list(loss), name="train loss", mode="lines", line=dict(color=ACCENT)
        ),
        1,
        1,
    )
    if eval_step:
        fig.add_trace(
            go.Scatter(
                x=list(eval_step),
                y=list(eval_loss),
                name="eval loss",
                mode="lines+markers",
                line=dict(color=EVAL),
            ),
            1,
            1,
        )
    fig.add_trace(
        go.Scatter(
            x=list(step), y=list(lr), name="learning rate", mode="lines", line=dict(color=MUTED)
        ),
        2,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=list(step), y=list(tokens_per_s), name="tokens/s", mode="lines", line=dict(color=GOOD)
        ),
        3,
        1,
    )
    fig.update_xaxes(title_text="step", row=3, col=1)
    lr_axis(fig, lr)
    title = "Training" + (" (downsampled: bucket means)" if downsampled else "")
    fig.update_layout(height=520, title=title, legend=dict(orientation="h", y=-0.12), **LAYOUT)
    return fig


def token_histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    max_length: int,
    truncated_share: float,
    over: str = "truncated",
) -> go.Figure:
    """Rows per token length, the max-length cut-off drawn, bars past it in red. `over` says
    what happens to longer rows: chat rows are truncated, text documents split into windows."""
    lo, hi = float(edges[0]), float(edges[-1])
    span = max(hi - lo, 1.0)
    mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    widths = [max(b - a, span / 40) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    colours = [
        BAD if top > max_length else ACCENT for top in edges[1:]
    ]  # bins holding truncated rows
    fig = go.Figure(
        go.Bar(
            x=mids,
            y=list(counts),
            width=widths,
            marker_color=colours,
            name="rows",
            hovertemplate="%{x:.0f} tokens: %{y} rows<extra></extra>",
        )
    )
    label = f"max length {max_length}: {truncated_share:.1%} of rows {over}"
    if max_length <= hi + span:  # the cut-off is drawn where it falls among the rows
        fig.add_vline(
            x=max_length,
            line=dict(color=BAD, dash="dash"),
            annotation_text=label,
            annotation_position="top right",
        )
        right = max(hi, max_length)
    else:  # far beyond the longest row: said, not drawn (it would squash the bars to nothing)
        fig.add_annotation(
            text=label + " (beyond the longest row)",
            xref="paper",
            yref="paper",
            x=1,
            y=1.08,
            showarrow=False,
            font=dict(color=MUTED),
        )
        right = hi
    fig.update_layout(
        height=320,
        title="Tokens per row (chat template applied)",
        xaxis_title="tokens",
        yaxis_title="rows",
        bargap=0.02,
        xaxis=dict(range=[lo - span * 0.05, right + span * 0.05]),
        **LAYOUT,
    )
    return fig


def memory_breakdown(
    terms: Sequence[tuple[str, float]], device_gib: float | None, device_name: str = ""
) -> go.Figure:
    """The peak memory, term by term (GiB, largest first), against the device's memory."""
    ordered = sorted(terms, key=lambda t: -t[1])
    total = sum(g for _, g in ordered)
    fig = go.Figure(
        go.Bar(
            y=[label for label, _ in ordered],
            x=[g for _, g in ordered],
            orientation="h",
            marker_color=ACCENT,
            text=[f"{g:.2f}" for _, g in ordered],
            textposition="outside",
            hovertemplate="%{y}: %{x:.2f} GiB<extra></extra>",
            cliponaxis=False,
        )
    )
    title = dict(text=f"Peak GPU memory: {total:.1f} GiB", font=dict(size=14))
    if device_gib:  # the device on a line of its own: a narrow column cut it off
        title["text"] += f" ({total / device_gib:.0%})"
        title["subtitle"] = dict(
            text=f"of {device_gib:.0f} GiB on {device_name}", font=dict(size=12)
        )
    fig.update_layout(
        height=100 + 26 * len(ordered),
        title=title,
        xaxis_title="GiB",
        yaxis=dict(autorange="reversed"),
        margin=dict(l=10, r=40, t=60, b=10),
        template=TEMPLATE,
    )
    return fig


def spend_bars(amounts: Mapping[str, float], title: str, *, horizontal: bool = False) -> go.Figure:
    keys, values = list(amounts), [round(v, 4) for v in amounts.values()]
    bar = go.Bar(y=keys, x=values, orientation="h") if horizontal else go.Bar(x=keys, y=values)
    bar.update(marker_color=ACCENT, hovertemplate="%{label}: $%{value:.2f}<extra></extra>")
    fig = go.Figure(bar)
    fig.update_layout(height=300, title=title, **LAYOUT)
    if horizontal:  # keys are categories: "2026-11" is a month, not a date to put on a time axis
        fig.update_xaxes(tickprefix="$")
        fig.update_yaxes(autorange="reversed", type="category")
    else:
        fig.update_xaxes(type="category")
        fig.update_yaxes(tickprefix="$")
    return fig


def budget_bar(spent: float, budget: float) -> go.Figure:
    """Spend against the budget as one horizontal bar."""
    colour = BAD if spent > budget else (EVAL if spent > 0.8 * budget else GOOD)
    fig = go.Figure(
        go.Bar(
            x=[spent],
            y=["spent"],
            orientation="h",
            marker_color=colour,
            hovertemplate="$%{x:.2f}<extra></extra>",
        )
    )
    fig.add_vline(
        x=budget, line=dict(color=MUTED, dash="dash"), annotation_text=f"budget ${budget:,.2f}"
    )
    fig.update_layout(
        height=120,
        xaxis=dict(range=[0, max(budget, spent) * 1.1], tickprefix="$"),
        yaxis=dict(visible=False),
        margin=dict(l=10, r=10, t=20, b=10),
        template=TEMPLATE,
    )
    return fig


def serverless_vs_pod(
    utilisations: Sequence[float],
    serverless_per_busy_h: Sequence[float],
    pod_per_busy_h: Sequence[float],
    actual_utilisation: float | None,
    break_even: float,
) -> go.Figure:
    """Dollars per hour of actual training against utilisation: Serverless is flat, a pod
    costs its rate ÷ utilisation; your utilisation and the break-even are marked."""
    xs = [u * 100 for u in utilisations]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=list(serverless_per_busy_h),
            name="Serverless (billed while busy)",
            mode="lines",
            line=dict(color=ACCENT, width=3),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=list(pod_per_busy_h),
            name="Always-on pod (billed while on)",
            mode="lines",
            line=dict(color=BAD, width=3),
        )
    )
    if break_even <= 1:
        fig.add_vline(
            x=break_even * 100,
            line=dict(color=MUTED, dash="dot"),
            annotation_text=f"break-even {break_even:.0%}",
            annotation_position="bottom right",
        )
    if actual_utilisation is not None:
        fig.add_vline(
            x=max(actual_utilisation, utilisations[0]) * 100,
            line=dict(color=GOOD, width=2),
            annotation_text=f"your utilisation {actual_utilisation:.1%}",
            annotation_position="top right",
        )
    fig.update_layout(
        height=360,
        title="Cost per hour of actual training",
        xaxis_title="utilisation (%)",
        # ticks at powers of ten only: plotly's minor "2" and "5" labels carry no "$"
        yaxis=dict(title="$ per busy GPU hour", type="log", tickprefix="$", dtick=1),
        legend=dict(orientation="h", y=-0.25),
        **LAYOUT,
    )
    return fig


class PreferenceLike(Protocol):
    step: list[int]
    reward_margin: list[float]
    accuracy: list[float]
    eval_step: list[int]
    eval_accuracy: list[float]


def preference_curves(series: PreferenceLike) -> go.Figure:
    """A DPO/ORPO job's reward margin and preference accuracy (train, and eval pairs) over
    steps, from `core.queries.PreferenceSeries`."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=(
            "Reward margin: beta x (chosen - rejected) log-ratio to the reference",
            "Preference accuracy",
        ),
    )
    fig.add_trace(
        go.Scatter(
            x=series.step,
            y=series.reward_margin,
            name="reward margin",
            mode="lines",
            line=dict(color=ACCENT),
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=series.step,
            y=series.accuracy,
            name="train pairs",
            mode="lines",
            line=dict(color=MUTED),
        ),
        2,
        1,
    )
    if series.eval_step:
        fig.add_trace(
            go.Scatter(
                x=series.eval_step,
                y=series.eval_accuracy,
                name="eval pairs",
                mode="lines+markers",
                line=dict(color=EVAL),
            ),
            2,
            1,
        )
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(
        height=360, title="Preference", legend=dict(orientation="h", y=-0.2), **LAYOUT
    )
    return fig


class MethodLike(Protocol):
    step: list[int]
    groups: dict[str, dict[str, list[float | None]]]


_METHOD_TITLES = {
    "reward": "Reward (mean, and per grader)",
    "completion": "Completion length (tokens)",
    "kl": "KL to the reference",
    "clip": "Clipped share of tokens",
}


def method_curves(series: MethodLike) -> go.Figure:
    """A job's method metrics over steps (`core.queries.MethodSeries`: KTO's KL and rewards,
    GRPO's rewards per grader, completion length, KL, clip ratio), one panel per metric."""
    names = list(series.groups)
    fig = make_subplots(
        rows=len(names),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=[_METHOD_TITLES.get(n.split("_")[0], n.replace("_", " ")) for n in names],
    )
    for row, name in enumerate(names, start=1):
        for k, (key, values) in enumerate(series.groups[name].items()):
            fig.add_trace(
                go.Scatter(
                    x=series.step,
                    y=values,
                    name=key.replace("_", " "),
                    mode="lines",
                    line=dict(color=ACCENT if k == 0 else None),
                    connectgaps=True,
                ),
                row,
                1,
            )
    fig.update_layout(height=180 * len(names) + 60, **LAYOUT)
    return fig
