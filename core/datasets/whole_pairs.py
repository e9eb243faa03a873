"""Preference rows whose answers are whole conversations: the prompt is their shared start.

Layouts (detected by `core.datasets.preference.preference_layout`):

    preference_implicit       {"chosen": [messages], "rejected": [messages], "system"?}
                              (TRL's implicit-prompt preference layout: both conversations
                              begin with the same turns)
    preference_ultrafeedback  {"prompt": str, "chosen": [messages], "rejected": [messages],
                              "score_chosen"?, "score_rejected"?}  (UltraFeedback binarized:
                              the conversations repeat the user turn the prompt names)
    preference_hh             {"chosen": str, "rejected": str} of "\\n\\nHuman: ...
                              \\n\\nAssistant: ..." turns  (Anthropic HH-RLHF)
    preference_llamafactory   {"chosen_messages": [messages], "rejected_messages":
                              [messages], "tools"?}  (LLaMA-Factory v1: content parts,
                              per-message `loss_weight`)

`split_pair(value, layout, problems)` gives (prompt, chosen, rejected): the prompt is the
longest run of first messages both conversations share, ended before any shared assistant
messages at its end (so each answer starts with the assistant's turn). An UltraFeedback
row's `prompt` must be that prompt's last user message (compared without surrounding
whitespace); a row that disagrees is refused rather than trusting either. Problems name
the row and the field; nothing here raises on content.
"""

from __future__ import annotations

import re
from typing import Any

from core.datasets.layouts import Message, _messages, _Problems

WHOLE_PAIR_LAYOUTS = (
    "preference_implicit",
    "preference_ultrafeedback",
    "preference_hh",
    "preference_llamafactory",
)
HH_MARK = "\n\nHuman:"
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def is_conversation(value: Any) -> bool:
    """A list of messages that starts with a turn other than the assistant's (a whole
    conversation, not just an answer)."""
    if not isinstance(value, list) or not value or not isinstance(value[0], dict):
        return False
    role = value[0].get("role", value[0].get("from"))
    return isinstance(role, str) and role.strip().lower() not in ("assistant", "gpt")


def split_pair(
    value: dict[str, Any], layout: str, problems: _Problems
) -> tuple[list[Message], list[Message], list[Message]]:
    """(prompt, chosen, rejected) of a whole-conversation pair; empty lists and the
    problem added when the row cannot be split."""
    keys = (
        ("chosen_messages", "rejected_messages")
        if layout == "preference_llamafactory"
        else ("chosen", "rejected")
    )
    sides = [_conversation(value.get(k), k, layout, problems) for k in keys]
    if problems:
        return [], [], []
    chosen, rejected = sides
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":
        n -= 1
    if n == 0 or not any(m["role"] == "user" for m in chosen[:n]):
        problems.add(
            "missing_field",
            keys[0],
            f"{keys[0]} and {keys[1]} do not begin with the same user turn: the prompt is "
            "their shared first turns",
        )
        return [], [], []
    prompt = chosen[:n]
    if layout == "preference_ultrafeedback" and not _prompt_agrees(value, prompt, problems):
        return [], [], []
    return prompt, chosen[n:], rejected[n:]


def _conversation(raw: Any, key: str, layout: str, problems: _Problems) -> list[Message]:
    if layout == "preference_hh":
        return hh_turns(raw, key, problems)
    return _messages(raw, key, problems)


def _prompt_agrees(value: dict[str, Any], prompt: list[Message], problems: _Problems) -> bool:
    given = value.get("prompt")
    if not isinstance(given, str):
        problems.add("wrong_type", "prompt", "prompt must be text (the conversations' user turn)")
        return False
    last_user = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
    if given.strip() != last_user.strip():
        problems.add(
            "role_order",
            "prompt",
            "prompt is not the user turn that chosen and rejected answer: "
            f"{given.strip()[:60]!r} against {last_user.strip()[:60]!r}",
        )
        return False
    return True


def hh_turns(raw: Any, key: str, problems: _Problems) -> list[Message]:
    """An HH-RLHF side ("\\n\\nHuman: ...\\n\\nAssistant: ...") as user and assistant
    messages; [] and the problem when it is not that text."""
    if not isinstance(raw, str):
        kind = "missing or null" if raw is None else f"{type(raw).__name__}, not text"
        problems.add("wrong_type", key, f"{key} is {kind}")
        return []
    pieces = _HH_TURN.split(raw)
    if pieces[0].strip() or len(pieces) < 3:
        problems.add(
            "role_order", key, f'{key} must be "\\n\\nHuman: ...\\n\\nAssistant: ..." turns'
        )
        return []
    msgs: list[Message] = []
    for i in range(1, len(pieces), 2):
        role = "user" if pieces[i] == "Human" else "assistant"
        text = pieces[i + 1].strip()
        if not text:
            where = f"{key} turn {i // 2 + 1}"
            problems.add("empty_content", key, f"{where} ({pieces[i]}) is empty")
            return []
        msgs.append({"role": role, "content": text})
    return msgs
