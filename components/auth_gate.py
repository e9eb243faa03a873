"""The auth gate: who is using this browser session, checked on every run before
`st.navigation` (`app.py` calls `gate()`).

- AUTH=none: the local user (`LOCAL_ACTOR`); no sign-in.
- AUTH=supabase: the person's Supabase client is kept with `session.per_session`
  (`session.auth_client()`): one per browser session, never in a shared cache, never in
  session state, dropped on sign-out. `session.signed_in_actor()` asks it for the
  signed-in user (refreshing the session when it is about to expire) and records the
  `Actor` with `session.sign_in`; `session.actor()`, the one place pages get the user
  from, calls it, so a page checks the session even when Streamlit runs it without
  app.py. `gate()` (app.py) also reads the role again from the database and draws the
  sidebar: who is signed in, Sign out. A session that ended (expired and not
  refreshable, revoked) signs the person out with a notice.
"""

from __future__ import annotations

import streamlit as st

from components import session
from components import widgets as w
from core.clients import auth
from core.db import repo
from core.users import Actor


def gate() -> Actor | None:
    """What app.py calls before navigation: the signed-in user (`session.signed_in_actor`,
    which checks the Supabase session), with the role read again from the database (a
    change applies on the next run) and the sidebar's sign-out."""
    actor = session.signed_in_actor()
    if actor is None or session.settings().auth == "none":
        return actor
    with session.db() as s:
        actor = repo.sign_in_actor(s, actor.user_id, actor.email)
    session.sign_in(actor)
    _sidebar(actor)
    return actor


def _sidebar(actor: Actor) -> None:
    with st.sidebar:
        role = " · admin" if actor.is_admin else ""
        st.caption(f"Signed in as {w.plain(actor.email or actor.user_id)}{role}")
        if st.button("Sign out", key="auth.sign_out", icon=":material/logout:"):
            try:
                auth.sign_out(session.auth_client())
            except auth.AuthError as e:  # the server could not be told; forget it here anyway
                st.session_state[session.SIGN_IN_NOTICE] = f"Signed out here; {e}"
            session.sign_out()
            st.rerun()
