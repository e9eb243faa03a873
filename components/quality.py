"""Adapter quality on the Adapters page: the "quality per dollar" figure (a pure plotly
function over plain data) and the evaluation section that shows it with the version's
scores and the answers where adapter and base differ most."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from components.charts import ACCENT, EVAL, LAYOUT, MUTED

_PALETTE = (ACCENT, EVAL, "#16a34a", "#dc2626", "#0891b2", "#9333ea", "#ea580c", "#4d7c0f")


def _get(p: Any, key: str) -> Any:
    return p[key] if isinstance(p, Mapping) else getattr(p, key)


def quality_vs_cost(points: Sequence[Any], metric_label: str = "ROUGE-L") -> go.Figure:
    """Each evaluated version at (dollars spent on it and its ancestors, adapter score), one
    colour per adapter, a line from each version to the parent it continued, and the base
    model's score on the same cases as a grey marker below it. `points` are
    `core.evaluate.QualityPoint`s or dicts with the same fields."""
    fig = go.Figure()
    _lineage_lines(fig, points)
    _adapter_markers(fig, points, metric_label)
    if points:
        _base_markers(fig, points, metric_label)
    fig.update_layout(
        height=360,
        title=f"Quality per dollar ({metric_label} on the eval split)",
        xaxis=dict(
            title="dollars spent (the version and its parents)", tickprefix="$", rangemode="tozero"
        ),
        yaxis=dict(title=metric_label, range=[0, 1.05]),
        legend=dict(orientation="h", y=-0.25),
        **LAYOUT,
    )
    return fig


def _lineage_lines(fig: go.Figure, points: Sequence[Any]) -> None:
    """A dotted line from each version to the parent it continued."""
    by_label = {_get(p, "label"): p for p in points}
    for label in by_label:
        p = by_label[label]
        parent = by_label.get(_get(p, "parent_label"))
        if parent is not None:
            fig.add_trace(
                go.Scatter(
                    x=[_get(parent, "lineage_cost_usd"), _get(p, "lineage_cost_usd")],
                    y=[_get(parent, "score"), _get(p, "score")],
                    mode="lines",
                    showlegend=False,
                    line=dict(color=MUTED, dash="dot"),
                    hoverinfo="skip",
                )
            )


def _adapter_markers(fig: go.Figure, points: Sequence[Any], metric_label: str) -> None:
    """Each adapter's versions, one colour per adapter, with the gain per dollar on hover."""
    adapters = list(dict.fromkeys(_get(p, "adapter") for p in points))
    for i, name in enumerate(adapters):
        mine = [p for p in points if _get(p, "adapter") == name]
        gains = []
        for p in mine:
            cost = _get(p, "lineage_cost_usd")
            gain = _get(p, "score") - _get(p, "base_score")
            gains.append(f"{gain / cost:+.3f} per $" if cost > 0 else "no spend recorded")
        fig.add_trace(
            go.Scatter(
                x=[_get(p, "lineage_cost_usd") for p in mine],
                y=[_get(p, "score") for p in mine],
                mode="markers+text",
                name=name,
                text=[_get(p, "label") for p in mine],
                textposition="top center",
                marker=dict(size=12, color=_PALETTE[i % len(_PALETTE)]),
                customdata=gains,
                hovertemplate=f"%{{text}}<br>{metric_label} %{{y:.3f}}<br>$%{{x:.4f}} spent (with its parents)"
                "<br>gain over base %{customdata}<extra></extra>",
            )
        )


def _base_markers(fig: go.Figure, points: Sequence[Any], metric_label: str) -> None:
    """The base model's score on each version's cases, a grey marker."""
    fig.add_trace(
        go.Scatter(
            x=[_get(p, "lineage_cost_usd") for p in points],
            y=[_get(p, "base_score") for p in points],
            mode="markers",
            name="base model",
            marker=dict(size=9, color=MUTED, symbol="circle-open"),
            text=[_get(p, "label") for p in points],
            hovertemplate=f"base model on %{{text}}'s eval rows: {metric_label} %{{y:.3f}}<extra></extra>",
        )
    )


def score_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The version's metrics as table rows: metric, adapter, base, difference; then the
    tool-calling metrics when its eval rows call tools."""
    from core.evaluate import METRIC_LABELS, METRICS
    from core.tool_scores import TOOL_METRIC_LABELS

    blocks = [(report, tuple(report.get("metrics") or METRICS), METRIC_LABELS)]
    tools = report.get("tools")
    if tools:
        blocks.append((tools, tuple(tools["metrics"]), TOOL_METRIC_LABELS))
    return [
        {
            "metric": labels.get(m, m.replace("_", " ")),
            "adapter": block["adapter"][m],
            "base": block["base"][m],
            "difference": block["delta"][m],
        }
        for block, metrics, labels in blocks
        for m in metrics
    ]


def tool_scores_figure(tools: Mapping[str, Any]) -> go.Figure:
    """Adapter and base side by side on each tool-calling metric (`eval_scores["tools"]`)."""
    from core.tool_scores import TOOL_METRIC_LABELS

    labels = [TOOL_METRIC_LABELS[m] for m in tools["metrics"]]
    fig = go.Figure()
    for who, colour in (("adapter", ACCENT), ("base", MUTED)):
        values = [tools[who][m] for m in tools["metrics"]]
        fig.add_bar(x=labels, y=values, name=who, marker_color=colour)
    fig.update_layout(
        title=f"Tool calls on {tools['rows']} eval rows",
        yaxis=dict(range=[0, 1.05]),
        barmode="group",
        **LAYOUT,
    )
    return fig


def evaluation_section(actor: Any, version_id: str, label: str) -> None:
    """The Adapters page's evaluation of one version, and the quality-per-dollar figure."""
    import streamlit as st

    from components import session
    from components import widgets as w
    from core import evaluate, queries
    from core.errors import BrightRunError

    try:
        with session.db() as s:
            points = evaluate.quality_points(actor, s)
            report = evaluate.report(actor, s, version_id)
    except BrightRunError as e:
        st.caption(w.plain(e))
        return
    st.subheader("Quality")
    if points:
        st.plotly_chart(quality_vs_cost(points), key="adapters.quality_chart")
    status = (report or {}).get("status")
    if status != "done":
        reason = (report or {}).get("reason") or (report or {}).get("error") or ""
        st.caption(
            f"{w.plain(label)}: evaluation {status or 'not run'}"
            + (f" ({w.plain(reason)})" if reason else "")
        )
        return
    st.caption(
        f"{report['rows']} eval rows, greedy answers from {w.plain(label)} and the base model "
        f"({w.plain(report.get('server_base'))}), scored against the references."
    )
    st.dataframe(
        score_rows(report),
        hide_index=True,
        width="stretch",
        column_config={
            "metric": st.column_config.TextColumn("metric", width="large"),  # never cut
            **{
                c: st.column_config.NumberColumn(format="%.3f")
                for c in ("adapter", "base", "difference")
            },
        },
    )
    for metric in report.get("metrics") or ():  # what a preference score measures
        if metric in queries.METRIC_MEANINGS:
            st.caption(w.plain(f"{metric.replace('_', ' ')}: {queries.METRIC_MEANINGS[metric]}"))
    if report.get("tools"):
        st.plotly_chart(tool_scores_figure(report["tools"]), key="adapters.tool_scores")
    _judge_result(report.get("judge"))
    _differences_table(report.get("differences") or [])


def _judge_result(judged: Mapping[str, Any] | None) -> None:
    """The LLM judge's win rate and its prompt, when a judge ran."""
    import streamlit as st

    from components import widgets as w
    from core import evaluate

    if judged and judged.get("win_rate") is not None:
        st.metric(
            "LLM judge: adapter preferred",
            f"{judged['win_rate']:.0%}",
            help=f"{judged['wins']} wins, {judged['ties']} ties, {judged['losses']} losses; judge {w.plain(judged['model'])}",
        )
        with st.expander("Judge prompt"):
            st.code(judged.get("prompt") or evaluate.JUDGE_PROMPT, language=None)


def _differences_table(diffs: Sequence[Mapping[str, Any]]) -> None:
    """The cases where adapter and base answers differ most."""
    import streamlit as st

    if diffs:
        st.markdown("**Where adapter and base differ most**")
        st.dataframe(
            [
                {
                    "prompt": d["prompt"],
                    "reference": d["reference"],
                    "adapter": d["adapter"],
                    "base": d["base"],
                    "difference": d["difference"],
                }
                for d in diffs
            ],
            hide_index=True,
            column_config={"difference": st.column_config.NumberColumn(format="%.2f")},
        )
