"""Compare runs (the Jobs page): pick 2 to 6 jobs from the list, then see them side by
side: loss, eval loss, learning rate and tokens/s against tokens seen, the cost to reach
an eval loss, the settings that differ and their adapters' evaluation scores
(`core.queries.compare_jobs`; `brightrun jobs compare` prints the same)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from components import compare_charts, session
from components import widgets as w
from core import queries
from core.errors import BrightRunError
from core.users import Actor


def one_type_per_column(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` as `st.dataframe` can send them (one Arrow type per column): a column that
    mixes numbers with "–" (a run without that score) is shown as text all the way down."""
    mixed = {k for k in (rows[0] if rows else {}) if len({isinstance(r[k], str) for r in rows}) > 1}
    return [{k: str(v) if k in mixed else v for k, v in r.items()} for r in rows]


def comparing() -> list[str]:
    """The jobs being compared: from the URL (`?compare=ID,ID`, a shareable link) or the
    session; [] when the list is shown."""
    ids = st.query_params.get("compare")
    return [i for i in ids.split(",") if i] if ids else list(st.session_state["jobs.comparing"])


def open_comparison(job_ids: Sequence[str]) -> None:
    st.session_state["jobs.comparing"] = list(job_ids)
    if job_ids:
        st.query_params["compare"] = ",".join(job_ids)
    else:
        st.query_params.pop("compare", None)


def picker(rows: Sequence[queries.JobRow]) -> None:
    """Choose 2 to 6 jobs (kept while paging) and open the comparison."""
    names = {r.id: f"{r.adapter or r.id} · {w.status(r.status)} · {r.id}" for r in rows}
    picked = st.session_state["jobs.compare_pick"]
    options = list(dict.fromkeys([*picked, *names]))
    left, right = st.columns([4, 1])
    chosen = left.multiselect(
        f"Compare runs ({queries.MIN_RUNS} to {queries.MAX_RUNS})",
        options,
        max_selections=queries.MAX_RUNS,
        key="jobs.compare_pick",
        format_func=lambda i: names.get(i, i),
    )
    right.write("")  # level with the select box
    if right.button(
        "Compare",
        key="jobs.compare",
        disabled=len(chosen) < queries.MIN_RUNS,
        icon=":material/compare:",
    ):
        open_comparison(chosen)
        st.rerun()


def view(actor: Actor, job_ids: Sequence[str]) -> None:
    """The comparison of `job_ids`, with a target eval loss to price."""
    if st.button("← All jobs", key="jobs.compare_back"):
        open_comparison([])
        st.rerun()
    st.subheader(f"Comparing {len(job_ids)} runs")
    target = st.number_input(
        "Target eval loss",
        min_value=0.0,
        value=None,
        step=0.01,
        format="%.4f",
        key="jobs.compare_target",
        placeholder="default: the loss every run reached",
    )
    try:
        with session.db() as s:
            cmp = queries.compare_jobs(actor, s, job_ids, target)
    except BrightRunError as e:
        w.show_error(e, stop=True)
    for r in cmp.runs:
        if r.note:
            st.caption(f"{w.plain(r.label)}: {r.note}")
    st.plotly_chart(compare_charts.compare_curves(cmp.runs), key="jobs.compare_curves")
    st.markdown("**Runs and their adapters' evaluation scores**")
    st.dataframe(one_type_per_column(cmp.summary_table()), hide_index=True, width="stretch")
    for note in cmp.metric_notes():
        st.caption(w.plain(note))
    left, right = st.columns([2, 3])
    left.plotly_chart(
        compare_charts.cost_to_target(
            [r.label for r in cmp.runs],
            [r.cost_to_target_usd for r in cmp.runs],
            cmp.target_eval_loss,
        ),
        key="jobs.compare_cost",
    )
    with right:
        st.markdown("**Settings that differ**")
        if cmp.settings:
            st.dataframe(cmp.settings_table(), hide_index=True, width="stretch")
        else:
            st.caption("All settings are the same.")
    st.download_button(
        "Curves as CSV",
        cmp.curves_csv(),
        file_name="compare-" + "-".join(job_ids) + ".csv",
        mime="text/csv",
        key="jobs.compare_csv",
    )
