"""BrightRun dashboard entry: page config, the auth gate, navigation. Nothing else."""

import streamlit as st

from components import auth_gate, sign_in

st.set_page_config(page_title="BrightRun", page_icon=":material/bolt:", layout="wide")

actor = auth_gate.gate()
if actor is None:  # AUTH=supabase and nobody signed in yet
    st.navigation([st.Page(sign_in.page, title="Sign in", icon=":material/login:")]).run()
    st.stop()

pages = {
    "BrightRun": [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/datasets.py", title="Datasets", icon=":material/dataset:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/jobs.py", title="Jobs", icon=":material/list_alt:"),
        st.Page("pages/adapters.py", title="Adapters", icon=":material/extension:"),
        st.Page("pages/playground.py", title="Playground", icon=":material/chat:"),
    ],
    "Account": [
        st.Page("pages/costs.py", title="Costs", icon=":material/payments:"),
        st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
        *(
            [st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:")]
            if actor.is_admin
            else []
        ),
    ],
}
st.navigation(pages).run()
