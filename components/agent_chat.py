"""The Playground's Tools tab: chat with function schemas, see tool calls as calls, paste a
tool's result and continue; reasoning is folded above each answer. The requests are
`core.clients.inference.agent_chat`; everything is shown as plain text or code, never
rendered markdown (see `components.chat`).

Session state (under `playground.`): `agent` ({served name: the OpenAI messages of that
model's conversation}), and the widget values `tools_json`, `agent_prompt`,
`enable_thinking`, `result.<served name>.<i>`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import streamlit as st

from components.widgets import plain, show_error
from core.clients.inference import (
    InferenceClient,
    ModelChoice,
    Sampling,
    agent_chat,
    parse_tools_json,
    tool_result,
)
from core.errors import BrightRunError

EXAMPLE_TOOLS = json.dumps(
    [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ],
    indent=1,
)


def _conversations() -> dict[str, list[dict[str, Any]]]:
    return st.session_state["playground.agent"]


def _pending_calls(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of the last assistant turn that no tool message answers yet."""
    if not messages or messages[-1]["role"] != "assistant":
        return []
    return list(messages[-1].get("tool_calls") or [])


def _show(messages: Sequence[dict[str, Any]]) -> None:
    for m in messages:
        role = "assistant" if m["role"] == "assistant" else "user"
        with st.chat_message(role):
            if m["role"] == "tool":
                st.caption("tool result")
            if m.get("reasoning"):
                with st.expander("Reasoning", expanded=False):
                    st.text(m["reasoning"], width="stretch")
            if m.get("content"):
                st.text(m["content"], width="stretch")
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                st.caption(f"calls {plain(fn['name'])}")
                st.code(fn["arguments"] or "{}", language="json")


def _ask(
    client: InferenceClient,
    c: ModelChoice,
    tools: list[dict[str, Any]],
    sampling: Sampling,
    thinking: bool,
) -> None:
    """One answer of model `c` to its conversation, kept in it (reasoning shown apart)."""
    messages = _conversations()[c.served_name]
    sent = [{k: v for k, v in m.items() if k != "reasoning"} for m in messages]
    try:
        reply = agent_chat(
            client, c.served_name, sent, tools=tools, sampling=sampling, enable_thinking=thinking
        )
    except BrightRunError as e:
        show_error(e)
        return
    messages.append({**reply.as_message(), "reasoning": reply.reasoning})


def _dataset_tools_picker(actor: Any, settings: Any) -> None:
    """Fill the tools box with the schemas of one of the actor's datasets whose rows
    define tools."""
    from core.clients.inference import database_ready, dataset_tools, tool_datasets
    from core.clients.storage import make_blob_store
    from core.db import session_scope

    if not database_ready(settings):
        return
    with session_scope(settings) as s:
        sets = tool_datasets(actor, s)
    if not sets:
        return
    c = st.columns([3, 1])
    name = c[0].selectbox("Or the tools of a dataset", list(sets), key="playground.tools_from")
    if c[1].button("Use its tools", key="playground.tools_use"):
        with session_scope(settings) as s:
            tools = dataset_tools(actor, s, make_blob_store(settings), sets[name])
        if not tools:
            st.warning(f"no row of {plain(name)} defines tools")
            return
        st.session_state["playground.tools_json"] = json.dumps(tools, indent=1)


def tools_tab(
    client: InferenceClient,
    chosen: Sequence[ModelChoice],
    system: str,
    sampling: Sampling,
    datasets: tuple[Any, Any] | None = None,
) -> None:
    """The Tools tab of the Playground (module docstring); `datasets` is (actor, settings)
    whose datasets that define tools may fill the box."""
    if datasets is not None:
        _dataset_tools_picker(*datasets)
    text = st.text_area(
        "Tools: OpenAI function schemas (JSON)",
        key="playground.tools_json",
        height=180,
    )
    thinking = st.toggle(
        "Thinking",
        value=True,
        key="playground.enable_thinking",
        help="sent as enable_thinking to the chat template (Qwen3 reads it; others ignore it)",
    )
    try:
        tools = parse_tools_json(text)
    except BrightRunError as e:
        show_error(e)
        return
    convs = _conversations()
    prompt = st.text_area("Message", key="playground.agent_prompt", height=68)
    if st.button("Send", key="playground.agent_send", disabled=not prompt.strip()):
        for c in chosen:
            start = [{"role": "system", "content": system}] if system.strip() else []
            convs.setdefault(c.served_name, start).append({"role": "user", "content": prompt})
            _ask(client, c, tools, sampling, thinking)
    for col, c in zip(st.columns(len(chosen)), chosen, strict=True):
        with col:
            st.caption(plain(c.label))
            messages = convs.get(c.served_name, [])
            _show(messages)
            _results_form(client, c, messages, tools, sampling, thinking)
    if st.button("Clear", key="playground.agent_clear", disabled=not convs):
        convs.clear()
        st.rerun()


def _results_form(
    client: InferenceClient,
    c: ModelChoice,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    sampling: Sampling,
    thinking: bool,
) -> None:
    """A box per pending call for its result, and a button that sends them and continues."""
    calls = _pending_calls(messages)
    if not calls:
        return
    results = [
        st.text_area(
            f"Result of {plain(call['function']['name'])}",
            key=f"playground.result.{c.served_name}.{i}",
            height=68,
        )
        for i, call in enumerate(calls)
    ]
    if st.button("Send results and continue", key=f"playground.continue.{c.served_name}"):
        try:
            answers = [tool_result(call["id"], r) for call, r in zip(calls, results, strict=True)]
        except BrightRunError as e:
            show_error(e)
            return
        messages.extend(answers)
        _ask(client, c, tools, sampling, thinking)
        st.rerun()
