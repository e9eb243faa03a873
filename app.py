"""BrightRun dashboard entry: page config, the auth gate, navigation. Nothing else.

The page scripts live in `app_pages/`, not `pages/`, on purpose: when a `pages/` folder sits
beside the main script, Streamlit (1.x) starts in its old multipage mode, in which a URL
such as `/datasets` runs `pages/datasets.py` alone (no app.py: no page config, no gate,
the sidebar listing every file, Admin included) until some run calls `st.navigation`; a
bookmark opened first after a restart kept the whole server in that mode. Without a
`pages/` folder every URL runs this script, and `st.navigation` picks the page from the
URL path (`url_path`, by default the file name), first visit or not; signed out, every
page's path shows the sign-in page, and signing in opens the page the URL named.
(A page handing over with `st.switch_page` was tried and dropped: the first visitor lost
the deep link and the raw page list was served before the hand-over.)
"""

import streamlit as st

from components import auth_gate, sections, sign_in

st.set_page_config(page_title="BrightRun", page_icon=":material/bolt:", layout="wide")

# (section, script, title, icon); a page's URL is its file name (/datasets), Overview is /.
PAGES = [
    ("BrightRun", "overview", "Overview", "home"),
    ("BrightRun", "datasets", "Datasets", "dataset"),
    ("BrightRun", "train", "Train", "model_training"),
    ("BrightRun", "jobs", "Jobs", "list_alt"),
    ("BrightRun", "adapters", "Adapters", "extension"),
    ("BrightRun", "playground", "Playground", "chat"),
    ("Account", "costs", "Costs", "payments"),
    ("Account", "settings", "Settings", "settings"),
    ("Account", "admin", "Admin", "admin_panel_settings"),
]

actor = auth_gate.gate()
if actor is None:  # AUTH=supabase and nobody signed in yet: every page's URL shows the sign-in,
    # and keeps its path, so the rerun after signing in opens the page the link named.
    sign = [st.Page(sign_in.page, title="Sign in", icon=":material/login:", default=True)]
    sign += [st.Page(sign_in.page, title="Sign in", url_path=name) for _, name, _, _ in PAGES[1:]]
    st.navigation(sign, position="hidden").run()
    st.stop()

pages: dict[str, list] = {}
for section, name, title, icon in PAGES:
    if name != "admin" or actor.is_admin:
        pages.setdefault(section, []).append(
            st.Page(
                f"app_pages/{name}.py",
                title=title,
                icon=f":material/{icon}:",
                default=name == "overview",
            )
        )
# An unexpected error shows one line with an error id (the traceback goes to the log).
with sections.section("this page"):
    st.navigation(pages).run()
