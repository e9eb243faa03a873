"""Per-session objects for the dashboard, built in one place.

- `settings()`: the `Settings`, read once per process (and again only when the environment
  or `.env` changes), shared by every session: a new session does not read `.env` again.
- `actor()`: the signed-in user, the only place pages get it from. With AUTH=none it is
  `LOCAL_ACTOR`; with AUTH=supabase the person's Supabase session (`auth_client()`) is
  checked on every call and the user recorded under `auth.actor` (`sign_in`/`sign_out`);
  a page without one stops with a sign-in message. The gate (`components.auth_gate`) and
  the sign-in page build on these.
- `init_state()`: every namespaced session-state key a page uses, with its default. Session
  state holds ids and small values only.
- `db()`: a unit of work (`core.db.session_scope`) on a database brought to the current
  schema once per process.
- `store()`, `runpod()`, `inference()`: the deployment's clients. They carry the
  deployment's keys, never a user's session, and are thread-safe, so one per configuration
  is shared through `st.cache_resource`. Clients that carry a user's own session (the
  Supabase Auth client) are kept per browser session with `per_session`, never in a
  shared cache and never in session state.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st
from sqlalchemy.orm import Session

from components.train import STATE as TRAIN_STATE
from components.train_options import STATE as TRAIN_OPTIONS_STATE
from components.widgets import show_error
from core.clients import auth
from core.settings import Settings, load_settings
from core.users import LOCAL_ACTOR, Actor

T = TypeVar("T")

SIGN_IN_NOTICE = "auth.notice"  # a message for the sign-in page after a session ended

# Every key a page keeps between reruns, namespaced by page. Widget keys are listed too,
# so their defaults live here and nowhere else.
STATE_DEFAULTS: dict[str, Any] = {
    "datasets.model": None,  # model whose chat template previews and measures rows
    "datasets.max_length": 2048,
    "datasets.selected": None,  # dataset id
    "datasets.confirm_delete": None,  # dataset id awaiting confirmation
    "datasets.rejected": None,  # the report of the last upload that had bad rows
    "datasets.upload_nonce": 0,  # bumped to clear the file uploader
    "datasets.upload_of": None,  # the chosen file the name and the report are about
    "train.preset": "Balanced",
    **TRAIN_STATE,  # LoRA and training widgets: the spec's defaults and the Balanced preset
    **TRAIN_OPTIONS_STATE,  # LoRA targets, LoRA on the routed experts, GPU type
    "jobs.statuses": [],
    "jobs.model": "",
    "jobs.dataset": "",
    "jobs.search": "",
    "jobs.sort": "started",
    "jobs.descending": True,
    "jobs.page": 1,
    "jobs.page_size": 25,
    "jobs.selected": None,  # job id shown in detail
    "jobs.live": True,
    "jobs.compare_pick": [],  # job ids picked for a comparison
    "jobs.comparing": [],  # job ids being compared (also ?compare=ID,ID in the URL)
    "jobs.compare_target": None,  # target eval loss whose cost is compared; None: automatic
    "costs.month": None,
    "adapters.confirm_delete": None,  # adapter name awaiting confirmation
}


def init_state() -> None:
    for key, value in STATE_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if isinstance(value, list | dict) else value


def settings() -> Settings:
    """The deployment's settings, shared by all sessions (a read-only object)."""
    return _settings(_environment_fingerprint())


@st.cache_resource(show_spinner=False, max_entries=4)
def _settings(fingerprint: str) -> Settings:
    return load_settings()


def _environment_fingerprint() -> str:
    """What the settings are read from: the environment and the `.env` file's mtime."""
    env = Path(".env")
    mtime = str(env.stat().st_mtime_ns) if env.is_file() else "-"
    return _fingerprint(mtime, *sorted(f"{k}={v}" for k, v in os.environ.items()))


# --------------------------------------------------------------------------- identity


def auth_client() -> Any:
    """This browser session's Supabase client (built on first use, kept with
    `per_session`: never in a shared cache, never in session state, dropped on sign-out)."""
    s = settings()
    return per_session("auth.client", lambda: auth.make_client(s))


def signed_in_actor() -> Actor | None:
    """The acting user, or None when AUTH=supabase and nobody is signed in. The Supabase
    session is checked on every call (refreshed when due); one that ended signs the person
    out with a notice for the sign-in page (`SIGN_IN_NOTICE`). A page script can still be
    run on its own (AppTest.from_file on it), so no page relies on the gate: `actor()`
    comes here."""
    if settings().auth == "none":
        return LOCAL_ACTOR
    try:
        identity = auth.current_identity(auth_client())
    except auth.SessionEnded as e:
        sign_out()
        st.session_state[SIGN_IN_NOTICE] = str(e)
        return None
    except auth.AuthError as e:
        show_error(e, stop=True)
    recorded = recorded_actor()
    if identity is None:
        if recorded is not None:
            sign_out()
        return None
    if recorded is None or recorded.user_id != identity.user_id:
        with db() as s:
            recorded = auth.actor_for(s, identity)
        sign_in(recorded)
    return recorded


def recorded_actor() -> Actor | None:
    """The actor the last sign-in check recorded, unchecked."""
    actor = st.session_state.get("auth.actor")
    return actor if isinstance(actor, Actor) else None


def actor() -> Actor:
    """The acting user; stops the page with a sign-in message when there is none."""
    current = signed_in_actor()
    if current is None:
        st.warning("Sign in to see your datasets, jobs and adapters.")
        st.stop()
    return current


def sign_in(user: Actor) -> None:
    """Record who the identity provider vouched for (the sign-in page calls this)."""
    st.session_state["auth.actor"] = user


def sign_out() -> None:
    st.session_state.pop("auth.actor", None)
    _drop_session_objects()


# --------------------------------------------------------------------------- database


@st.cache_resource(show_spinner="Preparing the database…")
def _migrated(url_fingerprint: str, _settings: Settings) -> str:
    from core import db

    if db.current_revision(_settings) != db.head_revision():
        db.upgrade(_settings)
    return url_fingerprint


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@contextmanager
def db() -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back on an error."""
    from core.db import session_scope

    s = settings()
    _migrated(_fingerprint(s.db_url), s)
    with session_scope(s) as session:
        yield session


# --------------------------------------------------------------------------- clients


@st.cache_resource(show_spinner=False)
def _store(_settings: Settings, fingerprint: str) -> Any:
    from core.clients.storage import make_blob_store

    return make_blob_store(_settings)


def store() -> Any:
    s = settings()
    key = s.supabase_key.get_secret_value() if s.storage == "supabase" else ""
    return _store(s, _fingerprint(s.storage, str(s.data_dir.resolve()), s.supabase_url, key))


@st.cache_resource(show_spinner=False)
def _runpod(_settings: Settings, fingerprint: str, probe: bool) -> Any:
    import httpx

    from core.clients.runpod import RunPodClient

    if probe:  # a health check answers at once: one attempt, short timeouts
        return RunPodClient.from_settings(
            _settings, max_attempts=1, timeout=httpx.Timeout(5.0, connect=2.0)
        )
    # The page waits on these calls: fewer, shorter retries than the background syncer.
    return RunPodClient.from_settings(
        _settings, max_attempts=2, backoff_s=0.25, timeout=httpx.Timeout(30.0, connect=3.0)
    )


def runpod(probe: bool = False) -> Any:
    s = settings()
    return _runpod(
        s, _fingerprint(s.gpu_cluster_api_url, s.gpu_cluster_api_key.get_secret_value()), probe
    )


def inference() -> Any:
    """The inference client the playground uses too (one per server configuration)."""
    from components.chat import inference_client

    return inference_client(settings())


# Objects that carry one browser session's credentials: kept per session id, dropped on
# sign-out and when their session has ended.
_per_session: dict[tuple[str, str], Any] = {}
_per_session_lock = threading.Lock()


def _session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def per_session(name: str, build: Callable[[], T]) -> T:
    """The `name` object of this browser session, built on first use."""
    sid = _session_id()
    with _per_session_lock:
        _prune_ended_sessions()
        if (sid, name) not in _per_session:
            _per_session[(sid, name)] = build()
        return _per_session[(sid, name)]


def _prune_ended_sessions() -> None:
    from streamlit import runtime

    if not runtime.exists():
        return
    live = runtime.get_instance()
    for key in [k for k in _per_session if not live.is_active_session(k[0])]:
        _per_session.pop(key, None)


def _drop_session_objects() -> None:
    sid = _session_id()
    with _per_session_lock:
        for key in [k for k in _per_session if k[0] == sid]:
            _per_session.pop(key, None)
