"""Settings page: what is configured. Secrets show only as set / not set."""

import streamlit as st

from components.session import settings

st.title("Settings")
st.caption("Read from the environment and `.env` at start-up; see `.env.example`.")
view = settings().public_view()
st.dataframe(
    [{"setting": k, "value": v} for k, v in view.items()],
    hide_index=True,
    width="stretch",
)
