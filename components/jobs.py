"""Jobs page widgets: the filter bar, the table, and one job's live detail.

The live part is an `st.fragment(run_every=...)`: while the job is unfinished it calls
`core.jobs.sync` and redraws only the numbers, the cold start, the charts, a GRPO job's
sample completions with their scores, and the checkpoints (each with "Promote to
version"); when the job ends it reruns the page once so the buttons match the new status.
"""

from __future__ import annotations

import json

import streamlit as st

from components import charts, session
from components import live as live_timing
from components import widgets as w
from components.sections import section
from core import actions as job_actions
from core import adapters, jobs, queries
from core.db.tables import JOB_STATUSES, TERMINAL_STATUSES
from core.errors import BrightRunError
from core.settings import Settings
from core.users import Actor


def filter_bar(options: queries.JobFilterOptions) -> tuple[queries.JobFilter, str, bool, int]:
    """Filters, sort and page size from the widgets (keys under `jobs.`)."""
    c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
    first = dict(on_change=lambda: st.session_state.update({"jobs.page": 1}))
    statuses = c1.multiselect(
        "Status", JOB_STATUSES, key="jobs.statuses", format_func=w.status, **first
    )
    if st.session_state["jobs.model"] not in ["", *options.models]:
        st.session_state["jobs.model"] = ""
    model = c2.selectbox(
        "Model",
        ["", *options.models],
        key="jobs.model",
        format_func=lambda m: m or "any model",
        **first,
    )
    ds_ids = ["", *options.datasets]
    if st.session_state["jobs.dataset"] not in ds_ids:
        st.session_state["jobs.dataset"] = ""
    dataset = c3.selectbox(
        "Dataset",
        ds_ids,
        key="jobs.dataset",
        format_func=lambda d: options.datasets.get(d, "any dataset"),
        **first,
    )
    search = c4.text_input("Search id or adapter", key="jobs.search", **first)
    s1, s2, s3 = st.columns([2, 1, 1])
    sort = s1.selectbox("Sort by", queries.JOB_SORTS, key="jobs.sort", **first)
    descending = s2.toggle("Descending", key="jobs.descending", **first)
    page_size = s3.selectbox("Rows per page", queries.PAGE_SIZES, key="jobs.page_size", **first)
    return queries.JobFilter(tuple(statuses), model, dataset, search), sort, descending, page_size


def table(page: queries.JobPage) -> None:
    records = [
        {
            "job": r.id,
            "status": w.status(r.status),
            "model": r.model,
            "dataset": r.dataset,
            "adapter": r.adapter,
            "started": w.when(r.started),
            "duration": w.duration(r.duration_s),
            "cost ($)": round(r.cost_usd, 4),
            "final loss": r.final_loss,
            "progress": r.progress,
        }
        for r in page.rows
    ]
    st.dataframe(
        records,
        hide_index=True,
        width="stretch",
        column_config={
            "cost ($)": st.column_config.NumberColumn(format="$%.4f"),
            "final loss": st.column_config.NumberColumn(format="%.4f"),
            "progress": st.column_config.ProgressColumn(
                min_value=0.0, max_value=1.0, format="percent"
            ),
        },
    )


def pager(page: queries.JobPage) -> None:
    left, mid, right = st.columns([1, 2, 1])
    if left.button("← Previous page", disabled=page.page <= 1, key="jobs.prev"):
        st.session_state["jobs.page"] = page.page - 1
        st.rerun()
    mid.caption(f"Page {page.page} of {page.pages} · {page.total} job(s)")
    if right.button("Next page →", disabled=page.page >= page.pages, key="jobs.next"):
        st.session_state["jobs.page"] = page.page + 1
        st.rerun()


def open_job(job_id: str | None) -> None:
    st.session_state["jobs.selected"] = job_id
    if job_id:
        st.query_params["job"] = job_id
    else:
        st.query_params.pop("job", None)


def go_to_job(job_id: str) -> None:
    """Open the Jobs page on `job_id`, its address holding `?job=` so a reload keeps it
    (switching pages clears the query string: it is given to the switch)."""
    st.session_state["jobs.selected"] = job_id
    st.switch_page("app_pages/jobs.py", query_params={"job": job_id})


def actions(detail: queries.JobDetail) -> None:
    """Cancel, retry and (after a failure) relaunch with the suggested settings."""
    actor, settings = session.actor(), session.settings()
    job = detail.job
    kw = dict(client=session.runpod(), store=session.store())
    c1, c2, c3 = st.columns(3)
    try:
        if detail.can_cancel and c1.button("Cancel job", key="jobs.cancel"):
            jobs.cancel(actor, settings, job.id, **kw)
            st.rerun()
        if detail.can_retry and c2.button("Retry (resume from checkpoint)", key="jobs.retry"):
            jobs.retry(actor, settings, job.id, **kw)
            st.rerun()
        suggested = jobs.relaunch_settings(job) if job.status == "FAILED" else None
        if suggested and c3.button(
            "Relaunch with suggested settings", key="jobs.relaunch", type="primary"
        ):
            new = jobs.relaunch(actor, settings, job.id, **kw)
            open_job(new.id)
            st.rerun()
    except BrightRunError as e:
        w.show_error(e)
    if job.status in ("FAILED", "TIMED_OUT") and job.failure_kind:
        w.show_error(f"{job.failure_kind.replace('_', ' ')}: {job.failure_message or ''}")
        if job.failure_suggestion:
            st.info(f"Suggested fix: {w.plain(job.failure_suggestion)}")
        if suggested:
            st.caption(
                "Relaunch uses: "
                + json.dumps(suggested["training"] | {"quantization": suggested["quantization"]})
            )


def live(job_id: str, shown_status: str) -> None:
    """The job's numbers and curves, refreshed while it runs (never sooner than three times
    the last redraw took, `components.live`); when the job has ended since the page was
    drawn with `shown_status`, the whole page is drawn again (buttons match)."""
    running = shown_status not in TERMINAL_STATUSES
    every = live_timing.interval("jobs.progress", session.settings().sync_interval_s, running)

    @st.fragment(run_every=every if running and st.session_state["jobs.live"] else None)
    @section("the job's progress")
    def _live() -> None:
        with live_timing.timed("jobs.progress"):
            _progress(job_id, running)

    _live()


def _progress(job_id: str, running: bool) -> None:
    """One redraw of the job's live section (see `live`)."""
    actor, settings = session.actor(), session.settings()
    if running:
        try:
            jobs.sync(actor, settings, job_id, client=session.runpod(), store=session.store())
        except BrightRunError as e:
            st.warning(f"Could not reach the GPU endpoint; showing what is stored. ({w.plain(e)})")
    with session.db() as s:
        d = queries.job_detail(actor, s, job_id)
        log = queries.event_log(actor, s, job_id)
    series = _series(actor, job_id, d.job.last_seq)
    if running and d.job.status in TERMINAL_STATUSES:
        st.rerun(scope="app")
    job = d.job
    st.markdown(
        f"{w.status_badge(job.status)} · {job.id} · {w.plain(job.base_model)} · dataset "
        f"{w.plain(d.dataset or '–')} · started {w.when(job.started_at)}"
    )
    metrics_row(d)
    if d.stop_note:
        st.info(w.plain(d.stop_note))
    cold_start(actor, settings, job)
    if series.empty:
        st.info("No training metrics yet: the worker reports them once the model is loaded.")
    else:
        st.plotly_chart(
            charts.training_curves(
                series.step,
                series.loss,
                series.eval_step,
                series.eval_loss,
                series.lr,
                series.tokens_per_s,
                downsampled=series.downsampled,
            ),
            key="jobs.chart",
        )
        if series.downsampled:
            st.caption(f"{series.points:,} logged steps drawn as {len(series.step)} bucket means.")
        method_charts(actor, job_id)
        samples(d.samples, d.last.get("step"))
    checkpoints(actor, job.id)
    with st.expander(f"Event log ({len(log)} newest)"):
        event_log(log)


def method_charts(actor: Actor, job_id: str) -> None:
    """The job's method metrics: KTO's and GRPO's as the methods' table names them, else
    DPO's and ORPO's preference curves (nothing for SFT)."""
    with session.db() as s:
        pref = queries.preference_series(actor, s, job_id)
        own = queries.method_series(actor, s, job_id)
    if not own.empty:
        st.plotly_chart(charts.method_curves(own), key="jobs.method_chart")
    elif not pref.empty:
        st.plotly_chart(charts.preference_curves(pref), key="jobs.preference_chart")


def _score(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "–"


def samples(items: list[queries.ShownSample], step: object) -> None:
    """A GRPO job's sample completions of its newest logged step with their reward and
    each grader's score; prompts and completions are plain text, never markdown."""
    if not items:
        return
    with st.expander(f"Sample completions at step {w.plain(step)}"):
        for n, item in enumerate(items, 1):
            scores = "".join(f" · {k} {_score(v)}" for k, v in item.scores.items())
            st.caption(w.plain(f"Sample {n}: reward {_score(item.reward)}{scores}"))
            st.text(f"Prompt: {item.prompt}", width="stretch")
            st.text(f"Completion: {item.completion}", width="stretch")


def cold_start(actor: Actor, settings: Settings, job: queries.JobView) -> None:
    seconds = job_actions.cold_start_s(actor, settings, job.id)
    if seconds is not None:
        st.caption(
            f"Cold start {w.duration(seconds)}: from the worker taking the job until it was ready to work "
            "(model and data loaded)"
        )
    elif job.status not in TERMINAL_STATUSES:
        st.caption("Cold start: not reported yet (the worker reports it once the model is loaded)")
    else:
        st.caption("Cold start: not reported by the worker")
    source = job_actions.model_source(actor, settings, job.id)
    if source:
        st.caption(f"Base model from {w.plain(source)}")


CHECKPOINTS_SHOWN = 20


def checkpoints(actor: Actor, job_id: str) -> None:
    """The job's checkpoints, newest first, each with Promote to version."""
    with session.db() as s:
        items = queries.job_checkpoints(actor, s, job_id)
    if not items:
        return
    st.markdown("**Checkpoints**")
    for v in items[:CHECKPOINTS_SHOWN]:
        c = st.columns([3, 2, 2])
        c[0].text(f"step {v.step}")
        c[1].text(f"loss {w.loss(v.final_loss)}")
        if v.version is not None:
            c[2].text(f"version v{v.version}")
        elif c[2].button(
            "Promote to version",
            key=f"jobs.promote.{v.id}",
            help="give this checkpoint the next version number of its adapter",
        ):
            try:
                with session.db() as s:
                    adapters.promote(actor, s, session.store(), v.id)
            except BrightRunError as e:
                w.show_error(e)
            else:
                st.rerun(scope="app")
    if len(items) > CHECKPOINTS_SHOWN:
        st.caption(f"showing the newest {CHECKPOINTS_SHOWN} of {len(items)} checkpoints")


@st.cache_data(max_entries=256, show_spinner=False)
def _series(actor: Actor, job_id: str, last_seq: int) -> queries.MetricSeries:
    """The chart's series, kept while the job has no new events (`last_seq`): a finished
    job's long series is read once, not on every view. Keyed by the actor: per user."""
    with session.db() as s:
        return queries.metric_series(actor, s, job_id)


def metrics_row(d: queries.JobDetail) -> None:
    job, last = d.job, d.last
    st.progress(
        min(1.0, job.progress or 0.0),
        text=f"{w.status(job.status)} · step {job.step or 0} of {job.total_steps or '?'}",
    )
    c = st.columns(6)
    c[0].metric("Loss", w.loss(job.final_loss))
    c[1].metric("Eval loss", w.loss(job.eval_loss))
    c[2].metric(
        "Learning rate", f"{last['lr']:.2e}" if isinstance(last.get("lr"), int | float) else "–"
    )
    c[3].metric(
        "Tokens/s",
        f"{last['tokens_per_s']:,.0f}"
        if isinstance(last.get("tokens_per_s"), int | float)
        else "–",
    )
    c[4].metric("ETA", jobs.eta_text(job) if job.status not in TERMINAL_STATUSES else "done")
    budget = f"budget {w.money(job.budget_usd)}" if job.budget_usd else None
    c[5].metric(
        "Cost" if job.status in TERMINAL_STATUSES else "Live cost",
        w.money(d.live_cost_usd),
        help=budget,
    )


def event_log(lines: list[queries.EventLine]) -> None:
    st.dataframe(
        [
            {"seq": e.seq, "time": w.when(e.time), "event": e.type, "detail": e.summary}
            for e in lines
        ],
        hide_index=True,
        width="stretch",
    )
