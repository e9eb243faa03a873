"""Adapter quality on the Adapters page: the "quality per dollar" figure (a pure plotly
function over plain data) and the evaluation section that shows it with the version's
scores and the answers where adapter and base differ most."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from components.charts import ACCENT, EVAL, MUTED

_LAYOUT: dict[str, Any] = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")
_PALETTE = (ACCENT, EVAL, "#16a34a", "#dc2626", "#0891b2", "#9333ea", "#ea580c", "#4d7c0f")


def _get(p: Any, key: str) -> Any:
    return p[key] if isinstance(p, Mapping) else getattr(p, key)


def quality_vs_cost(points: Sequence[Any], metric_label: str = "ROUGE-L") -> go.Figure:
    """Each evaluated version at (dollars spent on it and its ancestors, adapter score), one
    colour per adapter, a line from each version to the parent it continued, and the base
    model's score on the same cases as a grey marker below it. `points` are
    `core.evaluate.QualityPoint`s or dicts with the same fields."""
    fig = go.Figure()
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
    if points:
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
    fig.update_layout(
        height=360,
        title=f"Quality per dollar ({metric_label} on the eval split)",
        xaxis=dict(
            title="dollars spent (the version and its parents)", tickprefix="$", rangemode="tozero"
        ),
        yaxis=dict(title=metric_label, range=[0, 1.05]),
        legend=dict(orientation="h", y=-0.25),
        **_LAYOUT,
    )
    return fig


def score_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The version's metrics as table rows: metric, adapter, base, difference."""
    from core.evaluate import METRIC_LABELS, METRICS

    return [
        {
            "metric": METRIC_LABELS.get(m, m.replace("_", " ")),
            "adapter": report["adapter"][m],
            "base": report["base"][m],
            "difference": report["delta"][m],
        }
        for m in report.get("metrics") or METRICS
    ]


def evaluation_section(actor: Any, version_id: str, label: str) -> None:
    """The Adapters page's evaluation of one version, and the quality-per-dollar figure."""
    import streamlit as st

    from components import session
    from components import widgets as w
    from core import evaluate
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
            f"{label}: evaluation {status or 'not run'}"
            + (f" ({w.plain(reason)})" if reason else "")
        )
        return
    st.caption(
        f"{report['rows']} eval rows, greedy answers from {label} and the base model "
        f"({w.plain(report.get('server_base'))}), scored against the references."
    )
    st.dataframe(
        score_rows(report),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in ("adapter", "base", "difference")
        },
    )
    judged = report.get("judge")
    if judged and judged.get("win_rate") is not None:
        st.metric(
            "LLM judge: adapter preferred",
            f"{judged['win_rate']:.0%}",
            help=f"{judged['wins']} wins, {judged['ties']} ties, {judged['losses']} losses; judge {judged['model']}",
        )
        with st.expander("Judge prompt"):
            st.code(judged.get("prompt") or evaluate.JUDGE_PROMPT, language=None)
    diffs = report.get("differences") or []
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
