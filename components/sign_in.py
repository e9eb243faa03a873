"""The page routed while AUTH=supabase and nobody is signed in: sign in, or create an
account, with email and password through Supabase Auth. Success ends with
`components.session.sign_in(actor)` (done by the gate on the next run); every other page
then gets the user from `components.session.actor()`. Passwords are cleared from the form
when it is submitted."""

import streamlit as st

from components import session
from components import widgets as w
from core.clients import auth
from core.errors import InvalidInput


def page() -> None:
    st.title("Sign in to BrightRun")
    notice = st.session_state.pop(session.SIGN_IN_NOTICE, None)
    if notice:
        st.info(w.plain(notice))
    sign_in_tab, sign_up_tab = st.tabs(["Sign in", "Create an account"])
    with sign_in_tab, st.form("auth.sign_in_form", clear_on_submit=True):
        email = st.text_input("Email", key="auth.email", autocomplete="email")
        password = st.text_input(
            "Password", type="password", key="auth.password", autocomplete="current-password"
        )
        if st.form_submit_button("Sign in", type="primary", key="auth.sign_in"):
            _sign_in(email, password)
    with sign_up_tab, st.form("auth.sign_up_form", clear_on_submit=True):
        new_email = st.text_input("Email", key="auth.new_email", autocomplete="email")
        new_password = st.text_input(
            "Password", type="password", key="auth.new_password", autocomplete="new-password"
        )
        if st.form_submit_button("Create account", key="auth.sign_up"):
            _sign_up(new_email, new_password)


def _sign_in(email: str, password: str) -> None:
    try:
        identity = auth.sign_in(session.auth_client(), email, password)
        with session.db() as s:
            session.sign_in(auth.actor_for(s, identity))
    except (auth.AuthError, InvalidInput) as e:
        w.show_error(e)
        return
    st.rerun()


def _sign_up(email: str, password: str) -> None:
    try:
        result = auth.sign_up(session.auth_client(), email, password)
    except (auth.AuthError, InvalidInput) as e:
        w.show_error(e)
        return
    if not result.signed_in:
        st.info(
            "Check your email: open the confirmation link Supabase sent you, then sign in here."
        )
        return
    with session.db() as s:
        session.sign_in(auth.actor_for(s, result.identity))
    st.rerun()
