"""Admin: every user's spend this month and their limits; set a user's monthly budget,
concurrent-job limit, role and the Hub namespaces they may push to with the deployment's
token. Listed in the navigation for admins only."""

import streamlit as st

from components import session
from components import widgets as w
from core import admin
from core.errors import BrightRunError

st.title("Admin")
session.init_state()
actor, settings = session.actor(), session.settings()
if not actor.is_admin:
    w.show_error("This page is for admins.")
    st.stop()

with session.db() as s:
    rows = admin.user_rows(actor, s, settings)
st.subheader(f"Users in {rows[0].month}" if rows else "Users")
st.dataframe(
    [
        {
            "user": r.email or r.user_id,
            "role": r.role,
            "spent": w.money(r.month_spend_usd),
            "monthly budget": w.money(r.monthly_budget_usd)
            + (" (default)" if r.budget_is_default else ""),
            "unfinished jobs": r.unfinished_jobs,
            "jobs at once": f"{r.max_concurrent_jobs}"
            + (" (default)" if r.jobs_limit_is_default else ""),
            "Hub namespaces": ", ".join(r.hub_namespaces) or "none",
        }
        for r in rows
    ],
    hide_index=True,
    width="stretch",
)

st.subheader("Set a user's limits")
by_id = {r.user_id: r for r in rows}
uid = st.selectbox("User", list(by_id), format_func=lambda i: by_id[i].email or i, key="admin.user")
row = by_id[uid]
c1, c2 = st.columns(2)
budget_default = c1.checkbox(
    "Deployment default budget", value=row.budget_is_default, key=f"admin.budget_default.{uid}"
)
budget = c1.number_input(
    "Monthly budget ($)",
    0.0,
    admin.MAX_BUDGET_USD,
    float(row.monthly_budget_usd),
    step=10.0,
    disabled=budget_default,
    key=f"admin.budget.{uid}",
)
jobs_default = c2.checkbox(
    "Deployment default job limit", value=row.jobs_limit_is_default, key=f"admin.jobs_default.{uid}"
)
jobs = c2.number_input(
    "Jobs at once",
    0,
    admin.MAX_JOB_LIMIT,
    int(row.max_concurrent_jobs),
    disabled=jobs_default,
    key=f"admin.jobs.{uid}",
)
role = c1.selectbox(
    "Role", ["member", "admin"], index=int(row.role == "admin"), key=f"admin.role.{uid}"
)
if c2.button("Save role", key="admin.save_role", disabled=role == row.role):
    try:
        with session.db() as s:
            admin.set_role(actor, s, uid, role)
        st.toast(f"{w.plain(row.email or uid)} is now {role}")
        st.rerun()
    except BrightRunError as e:
        w.show_error(e)
if st.button("Save limits", type="primary", key="admin.save"):
    try:
        with session.db() as s:
            admin.set_limits(
                actor,
                s,
                uid,
                monthly_budget_usd=None if budget_default else float(budget),
                max_concurrent_jobs=None if jobs_default else int(jobs),
            )
        st.toast("Limits saved; they apply to the next launch")
        st.rerun()
    except BrightRunError as e:
        w.show_error(e)

hub = st.text_input(
    "Hub namespaces this user may push to with the deployment's HF_TOKEN",
    ", ".join(row.hub_namespaces),
    key=f"admin.hub.{uid}",
    help="Hugging Face users or organisations, separated by commas; empty: none. Admins "
    "push anywhere the token can; anyone may push with their own token.",
)
if st.button("Save Hub namespaces", key="admin.save_hub"):
    try:
        with session.db() as s:
            admin.set_hub_namespaces(actor, s, uid, hub.split(","))
        st.toast("Hub namespaces saved")
        st.rerun()
    except BrightRunError as e:
        w.show_error(e)
