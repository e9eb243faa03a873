"""Jobs: the history (filtered, sorted, paginated in the database), one job's live detail,
and 2 to 6 runs compared side by side."""

import streamlit as st

from components import compare, session
from components import jobs as ui
from components import widgets as w
from core import queries
from core.errors import BrightRunError

st.title("Jobs")
session.init_state()
actor = session.actor()

selected = st.query_params.get("job") or st.session_state["jobs.selected"]
if not selected and (compared := compare.comparing()):
    compare.view(actor, compared)
    st.stop()

if selected:
    if st.button("← All jobs", key="jobs.back"):
        ui.open_job(None)
        st.rerun()
    try:
        with session.db() as s:
            detail = queries.job_detail(actor, s, selected)
    except BrightRunError as e:
        w.show_error(e, stop=True)
    job = detail.job
    st.subheader(w.plain(job.adapter_name or job.id))
    ui.actions(detail)
    st.toggle(
        "Live updates", key="jobs.live", help="refresh the numbers and the chart while the job runs"
    )
    ui.live(job.id, job.status)
    with st.expander("Resolved settings"):
        st.json(job.spec or {})
    st.stop()

with session.db() as s:
    options = queries.job_filter_options(actor, s)
filters, sort, descending, page_size = ui.filter_bar(options)
try:
    with session.db() as s:
        page = queries.job_page(
            actor,
            s,
            filters=filters,
            sort=sort,
            descending=descending,
            page=st.session_state["jobs.page"],
            page_size=page_size,
        )
except BrightRunError as e:
    w.show_error(e, stop=True)
st.session_state["jobs.page"] = page.page

if not page.total:
    st.info("No jobs match. Launch one on the Train page.")
    st.page_link("app_pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

ui.table(page)
ui.pager(page)
compare.picker(page.rows)
choice = st.selectbox(
    "Open a job",
    [r.id for r in page.rows],
    index=None,
    key="jobs.open",
    format_func=lambda i: next(
        f"{r.adapter or r.id} · {r.status} · {i}" for r in page.rows if r.id == i
    ),
)
if choice:
    ui.open_job(choice)
    st.rerun()
