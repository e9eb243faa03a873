"""The auth gate: who is using this browser session, checked on every run before
`st.navigation` (`app.py` calls `gate()`).

- AUTH=none: the local user (`LOCAL_ACTOR`); no sign-in.
- AUTH=supabase: the person's Supabase client is kept with `session.per_session`
  ("auth.client"): one per browser session, never in a shared cache, never in session
  state, dropped on sign-out. On every run the gate asks it for the signed-in user
  (refreshing the session when it is about to expire), reads their role from the
  database, and records the `Actor` with `session.sign_in`, so `session.actor()` stays
  the one place pages get it from. A session that ended (expired and not refreshable,
  revoked) signs the person out with a notice. The sidebar shows who is signed in and a
  Sign out button.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from components import session
from components import widgets as w
from core import auth
from core.users import LOCAL_ACTOR, Actor

NOTICE = "auth.notice"  # a message for the sign-in page after a session ended


def client() -> Any:
    """This browser session's Supabase client (built on first use)."""
    settings = session.settings()
    return session.per_session("auth.client", lambda: auth.make_client(settings))


def gate() -> Actor | None:
    """The acting user, or None when AUTH=supabase and nobody is signed in."""
    settings = session.settings()
    if settings.auth == "none":
        return LOCAL_ACTOR
    try:
        identity = auth.current_identity(client())
    except auth.SessionEnded as e:
        session.sign_out()
        st.session_state[NOTICE] = str(e)
        return None
    except auth.AuthError as e:
        st.error(w.plain(e))
        st.stop()
    if identity is None:
        if session.signed_in_actor() is not None:
            session.sign_out()
        return None
    with session.db() as s:
        actor = auth.actor_for(s, identity)
    session.sign_in(actor)
    _sidebar(actor)
    return actor


def _sidebar(actor: Actor) -> None:
    with st.sidebar:
        role = " · admin" if actor.is_admin else ""
        st.caption(f"Signed in as {w.plain(actor.email or actor.user_id)}{role}")
        if st.button("Sign out", key="auth.sign_out", icon=":material/logout:"):
            try:
                auth.sign_out(client())
            except auth.AuthError as e:  # the server could not be told; forget it here anyway
                st.session_state[NOTICE] = f"Signed out here; {e}"
            session.sign_out()
            st.rerun()
