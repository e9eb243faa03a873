"""Jobs page."""

import streamlit as st

st.title("Jobs")
st.info("This page is not built yet: use the `brightrun` command line meanwhile.")
