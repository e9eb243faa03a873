"""The page routed while AUTH=supabase and nobody is signed in. Signing in ends with
`components.session.sign_in(actor)`; every other page then gets the user from
`components.session.actor()`."""

import streamlit as st


def page() -> None:
    st.title("Sign in")
    st.info(
        "This deployment uses AUTH=supabase: each person signs in with their email and "
        "password. Signing in through Supabase Auth is not available in this build yet; run "
        "with AUTH=none for the single local user."
    )
