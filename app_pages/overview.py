"""Overview: running jobs with live loss and spend, the month against the budget, the
newest adapters; a first-run guide while there is nothing yet."""

import streamlit as st

from components import charts, live, session
from components import jobs as jobs_ui
from components import widgets as w
from components.sections import section
from core import queries

st.title("Overview")
session.init_state()
actor, settings = session.actor(), session.settings()

with session.db() as s:
    ov = queries.overview(actor, s, settings)


# Live while a job runs; a slow refresh when nothing does (components.live).
@st.fragment(
    run_every=live.interval("overview.running", settings.sync_interval_s, bool(ov.running))
)
@section("the running jobs")
def running_jobs() -> None:
    with live.timed("overview.running"):
        with session.db() as s:
            ov = queries.overview(actor, s, settings)
        st.subheader("Running jobs")
        if not ov.running:
            st.caption("Nothing is running.")
        for job in ov.running:
            with st.container(border=True):
                left, mid, right = st.columns([3, 3, 2])
                left.markdown(
                    f"**{w.plain(job.adapter or job.id)}**  \n{w.status_badge(job.status)} · {w.plain(job.model)}"
                )
                left.progress(
                    min(1.0, job.progress), text=f"step {job.step or 0} of {job.total_steps or '?'}"
                )
                if job.loss:
                    mid.plotly_chart(
                        charts.shared_figure(charts.sparkline, job.loss),
                        key=f"overview.spark.{job.id}",
                        config={"displayModeBar": False},
                    )
                else:
                    mid.caption("waiting for the first loss")
                budget = f" of {w.money(job.budget_usd)}" if job.budget_usd else ""
                right.metric(
                    "Spend so far",
                    w.money(job.live_cost_usd),
                    help=f"budget{budget}" if budget else None,
                )
                if right.button("Open", key=f"overview.open.{job.id}"):
                    jobs_ui.open_job(job.id)
                    st.switch_page("app_pages/jobs.py")


if ov.is_empty:
    st.subheader("Welcome to BrightRun")
    st.markdown(
        "Fine-tune a model on your own conversations in three steps:\n"
        "1. **Upload a dataset** (chat messages, ShareGPT, Alpaca, prompt/completion or text; "
        "JSONL, JSON, CSV or Parquet).\n"
        "2. **Train**: pick a base model and settings; the planner checks that it fits and what it costs.\n"
        "3. **Chat** with the adapter you got, side by side with the base model."
    )
    c1, c2, c3 = st.columns(3)
    c1.page_link("app_pages/datasets.py", label="1 · Upload a dataset", icon=":material/upload:")
    c2.page_link("app_pages/train.py", label="2 · Train", icon=":material/model_training:")
    c3.page_link("app_pages/playground.py", label="3 · Chat", icon=":material/chat:")
    st.caption(
        "Locally everything runs on this machine with a tiny demo model; no account is needed."
    )
    st.stop()

running_jobs()

st.subheader(f"Spend in {ov.month}")
c1, c2 = st.columns([1, 3])
c1.metric(
    "This month",
    w.money(ov.month_spend_usd),
    help=f"monthly budget {w.money(ov.monthly_budget_usd)}",
)
c1.caption(f"{w.share(ov.budget_share)} of the {w.money(ov.monthly_budget_usd)} budget")
c2.plotly_chart(
    charts.shared_figure(charts.budget_bar, round(ov.month_spend_usd, 2), ov.monthly_budget_usd),
    key="overview.budget",
    config={"displayModeBar": False},
)

st.subheader("Latest adapters")
if not ov.recent_adapters:
    st.caption("No adapters yet: they appear here when a job completes.")
else:
    st.dataframe(
        [
            {
                "adapter": a.label,
                "base model": a.base_model,
                "dataset": a.dataset,
                "final loss": a.final_loss,
                "eval loss": a.eval_loss,
                "created": w.when(a.created_at),
            }
            for a in ov.recent_adapters
        ],
        hide_index=True,
        width="stretch",
    )
    st.page_link("app_pages/adapters.py", label="All adapters", icon=":material/extension:")
