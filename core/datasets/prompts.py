"""Prompts for GRPO: OpenAI's reinforcement fine-tuning rows (layout `prompts`).

A row is a conversation that ends with a user message, plus any other fields, which are
the item the graders read (`{{item.field}}`, `trainer.shared.graders`):

    {"messages": [{"role", "content"}, ...ending with a user message], ...other fields}

Detected per row (`is_prompt_row`): `messages` whose last message is from the user. The
messages are checked (a known role, text content or text parts, a system message only
first) and normalised to `{"role", "content"}`; every other field is kept as it is, so no
key is dropped (`core.datasets.census` counts none as unread). Never raises on content.
"""

from __future__ import annotations

from typing import Any

from core.datasets.records import Problem

ROLES = ("system", "user", "assistant")


def is_prompt_row(v: dict[str, Any]) -> bool:
    """A row whose `messages` end with a user message (nothing answers it)."""
    msgs = v.get("messages")
    return (
        isinstance(msgs, list)
        and bool(msgs)
        and isinstance(msgs[-1], dict)
        and msgs[-1].get("role") == "user"
    )


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") in ("text", "input_text") for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def normalise_prompt(value: Any, row: int) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The normalised prompts row, or None and the problems that make it unusable."""
    if not isinstance(value, dict):
        kind = type(value).__name__
        return None, [Problem(row, "not_an_object", "", f"the row is {kind}, not an object")]
    if not is_prompt_row(value):
        why = "the messages must end with a user message (the prompt to answer)"
        return None, [Problem(row, "bad_value", "messages", why)]
    out = []
    for i, m in enumerate(value["messages"]):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return None, [Problem(row, "bad_value", where, f"role must be one of {ROLES}")]
        if m["role"] == "system" and i:
            return None, [Problem(row, "bad_value", where, "a system message comes first only")]
        text = _text(m.get("content"))
        if text is None or not text.strip():
            return None, [Problem(row, "bad_value", where, "content must be non-empty text")]
        out.append({"role": m["role"], "content": text})
    return {**value, "messages": out}, []
