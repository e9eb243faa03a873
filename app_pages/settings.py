"""Settings: is each configured part answering, and with what; prices and budgets.
Secrets show only as set / not set."""

import streamlit as st

from components import session
from components import widgets as w
from core import planner, queries

st.title("Settings")
session.init_state()
actor, settings = session.actor(), session.settings()
st.caption(
    "Read from the environment and `.env` at start-up; see `.env.example`. Change them there and restart."
)

# The deployment's configuration (URLs, folders, health) is for admins on a shared deployment.
operator = settings.auth == "none" or actor.role == "admin"
if operator:
    st.subheader("Health")
    if st.button("Check again", key="settings.recheck"):
        st.rerun()
    parts = queries.health(
        settings,
        store=session.store(),
        runpod=session.runpod(probe=True),
        inference=session.inference(),
    )
    for p in parts:
        with st.container(border=True):
            left, right = st.columns([1, 3])
            left.markdown(
                f"**{p.part}**  \n{':green-badge[answering]' if p.ok else ':red-badge[not answering]'}"
            )
            right.text(
                f"configured: {p.configured}\n{'ok' if p.ok else 'not answering'}: {p.detail}"
            )

st.subheader("Prices and budgets")
with session.db() as s:
    limits = queries.user_limits(actor, s, settings)
c1, c2, c3 = st.columns(3)
c1.metric("Budget per job", w.money(settings.job_budget_usd))
c2.metric("Your monthly budget", w.money(limits.monthly_budget_usd))
c3.metric("Jobs at once", limits.max_concurrent_jobs)
st.caption(f"New jobs run on {settings.gpu_type}, Serverless {settings.price_tier} tier.")
st.dataframe(
    [
        {
            "GPU type": g.id,
            "name": g.name,
            "memory (GB)": g.memory_gb,
            "Serverless flex ($/h)": round(
                planner.rate_per_second(g.id, "flex", settings.gpu_prices) * 3600, 2
            ),
            "Serverless active ($/h)": round(g.active_per_s * 3600, 2),
            "pod ($/h)": g.pod_per_h,
            "override": "yes" if g.id in settings.gpu_prices else "",
        }
        for g in planner.GPU_TYPES.values()
    ],
    hide_index=True,
    width="stretch",
)

if operator:
    st.subheader("All settings")
    st.dataframe(
        [{"setting": k, "value": v} for k, v in settings.public_view().items()],
        hide_index=True,
        width="stretch",
    )
else:
    st.caption("The deployment's configuration and the health of its parts are shown to admins.")
