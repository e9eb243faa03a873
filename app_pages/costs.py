"""Costs: spend per month, GPU type, model and job; the budget; Serverless against an
always-on pod at the utilisation actually had."""

import streamlit as st

from components import charts, session
from components import widgets as w
from core import queries

st.title("Costs")
session.init_state()
actor, settings = session.actor(), session.settings()

with session.db() as s:
    options = queries.spend_months(actor, s)
    if st.session_state["costs.month"] not in options:
        st.session_state["costs.month"] = options[0]
    month = st.selectbox("Month", options, key="costs.month")
    sv = queries.spend_view(actor, s, settings, month)

c1, c2, c3 = st.columns(3)
c1.metric(f"Spent in {sv.month}", w.money(sv.month_spend_usd))
c2.metric("Monthly budget", w.money(sv.monthly_budget_usd))
c3.metric("Budget used", w.share(sv.budget_share))
if sv.budget_share >= 1:
    w.show_error(
        "The monthly budget is used up: new jobs are refused until next month or a larger budget."
    )
elif sv.budget_share >= 0.8:
    st.warning("More than 80% of the monthly budget is used.")
st.plotly_chart(
    charts.shared_figure(charts.budget_bar, round(sv.month_spend_usd, 2), sv.monthly_budget_usd),
    key="costs.budget",
    config={"displayModeBar": False},
)

vol = queries.volume_costs(settings)
with st.expander(f"Volume: {w.size(vol.total_bytes)}, {w.money(vol.usd_per_month)} a month"):
    st.caption(
        f"Models, checkpoints and adapters kept on the volume, billed at "
        f"${vol.usd_per_gb_month:.2f} per GB-month. Each job keeps its last "
        f"{settings.checkpoint_keep_last} checkpoints; a finished job's are dropped after "
        f"{settings.checkpoint_retention_days:g} days unless promoted."
    )
    st.markdown(" · ".join(f"{part}: {w.size(n)}" for part, n in vol.bytes_by_part.items()))

st.subheader("RunPod's bill for the endpoint")
with session.db() as s:
    bill = queries.endpoint_bill(actor, s, settings)
if bill.message:
    st.caption(bill.message)
else:
    b1, b2, b3 = st.columns(3)
    b1.metric("RunPod billed", w.money(bill.runpod_usd), help=f"endpoint {bill.endpoint_id}")
    b2.metric("Jobs recorded", w.money(bill.jobs_usd))
    b3.metric("Not carried by a job", w.money(bill.difference_usd))
    st.dataframe(
        [
            {
                "day": str(d.day),
                "RunPod ($)": d.runpod_usd,
                "jobs ($)": d.jobs_usd,
                "difference ($)": d.difference_usd,
            }
            for d in reversed(bill.days)
        ],
        hide_index=True,
        width="stretch",
    )
    st.caption(
        "The difference is what no job carried: idle or active workers kept warm, boots no "
        "job started, disk and RunPod's fee"
        + ("." if bill.all_users else "; and other users' jobs (the jobs column is yours).")
    )

if not sv.by_month:
    st.info("No GPU time recorded yet: costs appear here when jobs finish.")
    st.stop()

left, right = st.columns(2)
left.plotly_chart(
    charts.shared_figure(charts.spend_bars, sv.by_month, "Spend per month"), key="costs.by_month"
)
right.plotly_chart(
    charts.shared_figure(charts.spend_bars, sv.by_gpu or {"–": 0.0}, f"Per GPU type ({sv.month})"),
    key="costs.by_gpu",
)
left.plotly_chart(
    charts.shared_figure(
        charts.spend_bars, sv.by_model or {"–": 0.0}, f"Per model ({sv.month})", horizontal=True
    ),
    key="costs.by_model",
)
with right:
    st.markdown(f"**Per job ({sv.month}, most expensive first)**")
    st.dataframe(
        [
            {
                "job": j.job_id,
                "model": j.model,
                "GPU": j.gpu_type,
                "GPU time": w.duration(j.seconds),
                "cost ($)": round(j.usd, 4),
            }
            for j in sv.by_job
        ],
        hide_index=True,
        width="stretch",
        column_config={"cost ($)": st.column_config.NumberColumn(format="$%.4f")},
    )

st.subheader("Serverless against an always-on pod")
cmp = sv.comparison
if cmp is None:
    st.caption(f"No GPU time in {sv.month} to compare.")
    st.stop()
pods = "a pod" if cmp.pods == 1 else f"{cmp.pods} pods (your jobs ran side by side)"
st.markdown(
    f"In {sv.month} your jobs kept a GPU busy **{cmp.busy_hours:.2f} h** of the **{cmp.pod_hours_on:.0f} h** "
    f"so far: a utilisation of **{sv.utilisation:.1%}**. On Serverless ({sv.compared_gpu}, "
    f"${cmp.serverless_rate_h:.2f}/h while busy) that work costs **{w.money(cmp.serverless_usd)}**; "
    f"{pods} left on all that time at ${cmp.pod_rate_h:.2f}/h would have cost **{w.money(cmp.pod_usd)}**."
)
m1, m2, m3 = st.columns(3)
m1.metric("Serverless", w.money(cmp.serverless_usd))
m2.metric("Always-on pod", w.money(cmp.pod_usd))
m3.metric(
    "Break-even utilisation",
    f"{cmp.break_even_utilisation:.0%}",
    help="above this share of busy hours an always-on pod is cheaper",
)
grid = [u / 100 for u in range(1, 101)]
sl, pod = queries.cost_per_busy_hour(cmp.serverless_rate_h, cmp.pod_rate_h, grid)
st.plotly_chart(
    charts.shared_figure(
        charts.serverless_vs_pod, grid, sl, pod, sv.utilisation, cmp.break_even_utilisation
    ),
    key="costs.pod",
)
