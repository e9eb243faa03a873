"""How often a live section (`@st.fragment(run_every=...)`) redraws itself.

A live section refreshes at the deployment's sync interval while there is something to
watch, and far less often when there is not (a new job still shows up, a minute or so
later, and on any full rerun). It never asks for a redraw sooner than three times its
last render took: a slow render (a busy server, many sessions) spaces its own reruns out
instead of piling them up behind one another. The interval is read on each full run of the
page (where the fragment is declared); `timed` records how long a render took.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

IDLE_FACTOR = 6  # nothing to watch: this many sync intervals between redraws
IDLE_MIN_S = 60.0
SLOW_FACTOR = 3  # at least this many render times between redraws


def interval(key: str, base_s: float, active: bool) -> float:
    """Seconds between redraws of the live section `key`."""
    every = base_s if active else max(base_s * IDLE_FACTOR, IDLE_MIN_S)
    last = st.session_state.get(f"{key}.render_s", 0.0)
    return max(every, SLOW_FACTOR * last)


@contextmanager
def timed(key: str) -> Iterator[None]:
    """Record how long this render of the live section `key` took."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        st.session_state[f"{key}.render_s"] = time.perf_counter() - t0
