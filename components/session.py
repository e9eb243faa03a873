"""Per-session objects for the dashboard, built once per browser session.

Session state holds ids and small values under namespaced keys; clients that carry a
user's session live here, one per browser session, never in a shared cache.
"""

from __future__ import annotations

import streamlit as st

from core.settings import Settings, load_settings


def settings() -> Settings:
    if "app.settings" not in st.session_state:
        st.session_state["app.settings"] = load_settings()
    return st.session_state["app.settings"]
