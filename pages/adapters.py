"""Adapters page."""

import streamlit as st

st.title("Adapters")
st.info("This page is not built yet: use the `brightrun` command line meanwhile.")
