"""BrightRun dashboard entry: page config, the auth gate, navigation. Nothing else.

The page scripts live in `app_pages/`, not `pages/`, on purpose: when a `pages/` folder sits
beside the main script, Streamlit (1.x) starts in its old multipage mode, in which a URL
such as `/datasets` runs `pages/datasets.py` alone (no app.py: no page config, no gate,
the sidebar listing every file, Admin included) until some run calls `st.navigation`; a
bookmark opened first after a restart kept the whole server in that mode. Without a
`pages/` folder every URL runs this script, and `st.navigation` picks the page from the
URL path (`url_path`, by default the file name), first visit or not, signed in or not.
(A page handing over with `st.switch_page` was tried and dropped: the first visitor lost
the deep link and the raw page list was served before the hand-over.)
"""

import streamlit as st

from components import auth_gate, sign_in

st.set_page_config(page_title="BrightRun", page_icon=":material/bolt:", layout="wide")

actor = auth_gate.gate()
if actor is None:  # AUTH=supabase and nobody signed in yet
    st.navigation([st.Page(sign_in.page, title="Sign in", icon=":material/login:")]).run()
    st.stop()

pages = {
    "BrightRun": [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("app_pages/datasets.py", title="Datasets", icon=":material/dataset:"),
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("app_pages/jobs.py", title="Jobs", icon=":material/list_alt:"),
        st.Page("app_pages/adapters.py", title="Adapters", icon=":material/extension:"),
        st.Page("app_pages/playground.py", title="Playground", icon=":material/chat:"),
    ],
    "Account": [
        st.Page("app_pages/costs.py", title="Costs", icon=":material/payments:"),
        st.Page("app_pages/settings.py", title="Settings", icon=":material/settings:"),
        *([st.Page("app_pages/admin.py", title="Admin", icon=":material/admin_panel_settings:")] if actor.is_admin else []),
    ],
}
st.navigation(pages).run()
