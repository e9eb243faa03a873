"""Playground widgets: session state, the shared inference client, sampling controls and
the side-by-side conversation. The logic they call lives in `core.clients.inference`.

Every chosen model answers at the same time (`answer_turn`: one thread per model reads its
stream, only the script thread draws). When the base is the tiny demo model (random
weights) the page says so (`demo_notice`).

Prompts and answers are shown as plain text (`st.text`), while streaming and after: a
model's answer can carry markdown, links, images or HTML that a prompt-injected dataset
taught it, and none of that may render in the browser.

Session state (all under `playground.`): `turns` (the conversation as plain data:
[{"user", "answers": {served name: text}}]), `ready` ({served name: how it was made
available}), `set_rows` (the last compare-on-a-set table as records), and the widget
values (`models`, `system`, sampling).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import streamlit as st

from components.agent_chat import EXAMPLE_TOOLS
from components.widgets import plain, show_error
from core.clients.inference import (
    CompareRow,
    InferenceRouter,
    ModelChoice,
    ModelNotServed,
    PromptCase,
    Sampling,
    conversation_messages,
    holds_tool_call,
)
from core.clients.inference.streams import is_demo_model, stream_together
from core.settings import Settings
from core.users import Actor

TOOL_CALL_HINT = (
    "This answer calls a tool, written out as text: the Tools tab sends function schemas, "
    "shows calls as calls and takes their results."
)
DEMO_MODEL_NOTICE = (
    "The base model here is BrightRun's tiny demo model: built on this machine with random "
    "weights, so its answers (and those of adapters trained on it) are gibberish. It is "
    "there to try the whole loop (upload, train, chat) without downloading a model; set "
    "INFERENCE_BASE_MODEL to a real model (or INFERENCE_URL to a vLLM server) for real answers."
)
SIDE_BY_SIDE = 4  # models answering side by side: e.g. the base, an SFT and a DPO version

STATE_DEFAULTS: dict[str, Any] = {
    "playground.turns": [],
    "playground.ready": {},
    "playground.set_rows": [],
    "playground.set_export": "",  # the last set's answers as JSONL (core's export_set_jsonl)
    "playground.system": "",
    "playground.agent": {},  # the Tools tab's conversations (components.agent_chat)
    "playground.tools_json": EXAMPLE_TOOLS,
}


def init_state() -> None:
    for key, value in STATE_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if hasattr(value, "copy") else value


@st.cache_resource(show_spinner=False)
def _client(_settings: Settings, fingerprint: str) -> InferenceRouter:
    return InferenceRouter(_settings)


def inference_client(settings: Settings) -> InferenceRouter:
    """One router per server configuration (a client per endpoint), shared: it holds no
    user data (the key is the deployment's; routes are served names) and the openai
    client is thread-safe."""
    key = settings.inference_api_key.get_secret_value().encode()
    parts = [
        settings.inference_url,
        repr(sorted(settings.inference_urls.items())),
        hashlib.sha256(key).hexdigest(),
        settings.inference_lora_loading,
        settings.inference_adapters_dir,
        str(settings.data_dir),
    ]
    return _client(settings, "|".join(parts))


def sampling_controls() -> Sampling:
    """Sampling widgets, defaulting to `Sampling()`; raises InvalidInput on bad values."""
    d = Sampling()
    temperature = st.slider(
        "Temperature",
        0.0,
        2.0,
        d.temperature,
        0.05,
        key="playground.temperature",
        help="0 answers greedily (the same answer every time)",
    )
    top_p = st.slider("Top-p", 0.05, 1.0, d.top_p, 0.05, key="playground.top_p")
    max_tokens = st.number_input("Max tokens", 1, 8192, d.max_tokens, key="playground.max_tokens")
    seed = st.number_input(
        "Seed",
        0,
        2**31 - 1,
        value=None,
        key="playground.seed",
        help="set it for repeatable sampled answers",
    )
    stop = st.text_area("Stop strings, one per line", key="playground.stop", height=68)
    return Sampling(
        temperature=float(temperature),
        top_p=float(top_p),
        max_tokens=int(max_tokens),
        seed=None if seed is None else int(seed),
        stop=tuple(s for s in stop.splitlines() if s),
    )


def ensure_ready(client: InferenceRouter, choices: Sequence[ModelChoice], actor: Actor) -> None:
    """Make each chosen adapter available once per session; show how (the detail, which
    may name the adapter's folder, to admins only)."""
    ready: dict[str, str] = st.session_state["playground.ready"]
    for c in choices:
        if c.is_adapter and c.served_name not in ready:
            got = client.ensure_adapter(c.served_name, c.path)
            ready[c.served_name] = got.detail if actor.is_admin else got.summary
        if c.is_adapter:
            st.caption(f"**{plain(c.label)}**: {plain(ready[c.served_name])}")


def render_conversation(turns: Sequence[dict[str, Any]], chosen: Sequence[ModelChoice]) -> None:
    for turn in turns:
        with st.chat_message("user"):
            st.text(turn["user"], width="stretch")
        for col, c in zip(st.columns(len(chosen)), chosen, strict=True):
            with col, st.chat_message("assistant"):
                st.caption(plain(c.label))
                st.text(turn["answers"].get(c.served_name, "—"), width="stretch")
                tool_call_hint(turn["answers"].get(c.served_name, ""))


def tool_call_hint(answer: str) -> None:
    """Under an answer that is a tool call written as text: where calls are shown as calls."""
    if holds_tool_call(answer):
        st.caption(TOOL_CALL_HINT)


def stream_as_text(pieces: Iterable[str]) -> str:
    """Show an answer as it arrives, as plain text; returns the whole answer."""
    box = st.empty()
    text = ""
    for piece in pieces:
        text += piece
        box.text(text, width="stretch")
    return text


def demo_notice(chosen: Sequence[ModelChoice]) -> None:
    """Say so when a chosen model is (or was trained on) the tiny demo model."""
    if any(is_demo_model(c.trained_on or "" if c.is_adapter else c.served_name) for c in chosen):
        st.info(DEMO_MODEL_NOTICE, icon=":material/casino:")


def answer_turn(
    client: InferenceRouter,
    chosen: Sequence[ModelChoice],
    system: str,
    prompt: str,
    sampling: Sampling,
) -> None:
    """Stream every chosen model's answer side by side, all at once (one thread per model
    feeds the queue `stream_together` drains here: only this thread draws), then keep the
    turn."""
    turns: list[dict[str, Any]] = st.session_state["playground.turns"]
    with st.chat_message("user"):
        st.text(prompt, width="stretch")
    boxes: dict[str, tuple[Any, Any]] = {}
    for col, c in zip(st.columns(len(chosen)), chosen, strict=True):
        with col, st.chat_message("assistant"):
            st.caption(plain(c.label))
            boxes[c.served_name] = (st.empty(), st.container())  # the answer, notes under it
    texts = {c.served_name: "" for c in chosen}
    answers: dict[str, str] = {}
    for piece in stream_together(
        {c.served_name: _opener(client, c, system, turns, prompt, sampling) for c in chosen}
    ):
        box, notes = boxes[piece.model]
        if not piece.done:
            texts[piece.model] += piece.text
            box.text(texts[piece.model], width="stretch")
        elif piece.error is None:
            answers[piece.model] = texts[piece.model]
            with notes:
                tool_call_hint(texts[piece.model])
        else:
            if isinstance(piece.error, ModelNotServed):  # loaded again next time
                st.session_state["playground.ready"].pop(piece.model, None)
            with notes:
                show_error(piece.error)
    turns.append(
        {
            "user": prompt,
            "answers": {
                c.served_name: answers[c.served_name] for c in chosen if c.served_name in answers
            },
        }
    )


def _opener(
    client: InferenceRouter,
    choice: ModelChoice,
    system: str,
    turns: Sequence[dict[str, Any]],
    prompt: str,
    sampling: Sampling,
) -> Callable[[], Iterable[str]]:
    messages = conversation_messages(system, turns, choice.served_name, next_user=prompt)
    return lambda: client.stream_chat(choice.served_name, messages, sampling)


def eval_sets(actor: Actor, settings: Settings) -> dict[str, str]:
    """The actor's datasets with an eval split ({name: id}); none before the database exists."""
    from core.clients.inference import database_ready, eval_split_datasets
    from core.db import session_scope

    if not database_ready(settings):
        return {}
    with session_scope(settings) as session:
        return eval_split_datasets(actor, session)


def eval_cases(actor: Actor, settings: Settings, dataset_id: str) -> list[PromptCase]:
    from core.clients.inference import eval_split_cases
    from core.clients.storage import make_blob_store
    from core.db import session_scope

    with session_scope(settings) as session:
        return eval_split_cases(actor, session, make_blob_store(settings), dataset_id)


def set_rows(rows: Sequence[CompareRow], chosen: Sequence[ModelChoice]) -> list[dict[str, str]]:
    """Table records: prompt, reference, then one column per model label."""
    return [
        {
            "prompt": r.prompt,
            "reference": r.reference or "",
            **{c.label: r.answers.get(c.served_name, "") for c in chosen},
        }
        for r in rows
    ]
