"""KTO rows: single answers labelled desirable or undesirable (unpaired preference data).

Accepted layout `kto`, detected per row (`is_kto_row`): a `label` (or LLaMA-Factory's
`kto_tag`) next to a chat in any form `core.datasets.layouts` reads:

    {"prompt", "completion", "label"}              TRL's unpaired preference layout
                                                   (strings, or lists of messages)
    {"messages": [...], "label"}                   LLaMA-Factory's KTO demo data
    {"conversations": [...], "kto_tag"}            the same in ShareGPT form

The label is a boolean (true: desirable), or the text "true"/"false" as a CSV cell gives
it; `label` and `kto_tag` both given must agree. The chat is checked exactly as an SFT row
(`layouts.normalise_row_checked`, tools and calls included) and split after its last user
message:

    {"prompt": [messages], "completion": [messages], "label": bool, "tools"?: [...]}

Such data trains with method `kto` only (`trainer.shared.methods`: the `labelled` kind), so
it is never trained as if every answer were a good one. Never raises on content.
"""

from __future__ import annotations

from typing import Any

from core.datasets.layouts import _Problems, normalise_row_checked
from core.datasets.records import Problem

LABEL_KEYS = ("label", "kto_tag")
_TRUTH = {"true": True, "false": False}


def is_kto_row(v: dict[str, Any]) -> bool:
    """A row with a KTO label next to a chat."""
    if not any(k in v for k in LABEL_KEYS):
        return False
    return "messages" in v or "conversations" in v or ("prompt" in v and "completion" in v)


def _chat_layout(v: dict[str, Any]) -> str:
    if "messages" in v:
        return "messages"
    return "sharegpt" if "conversations" in v else "prompt_completion"


def _label(value: dict[str, Any], problems: _Problems) -> bool | None:
    found: dict[str, bool] = {}
    for key in LABEL_KEYS:
        raw = value.get(key)
        if raw is None:
            continue
        label = raw if isinstance(raw, bool) else None
        if isinstance(raw, str):
            label = _TRUTH.get(raw.strip().lower())
        if label is None:
            problems.add("wrong_type", key, f"{key} must be true or false, not {raw!r}"[:200])
            return None
        found[key] = label
    if not found:
        problems.add("missing_field", "label", "the row has no label (true or false)")
        return None
    if len(set(found.values())) > 1:
        problems.add("wrong_type", "kto_tag", "label and kto_tag disagree")
        return None
    return next(iter(found.values()))


def normalise_kto(value: Any, row: int) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The normalised KTO row, or None and the problems that make it unusable."""
    if not isinstance(value, dict):
        kind = type(value).__name__
        return None, [Problem(row, "not_an_object", "", f"the row is {kind}, not an object")]
    problems = _Problems(row)
    label = _label(value, problems)
    if label is None:
        return None, list(problems)
    chat, chat_problems = normalise_row_checked(value, _chat_layout(value), row)
    if chat is None:
        return None, chat_problems
    msgs = chat["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    out: dict[str, Any] = {
        "prompt": msgs[: last_user + 1],
        "completion": msgs[last_user + 1 :],
        "label": label,
    }
    if chat.get("tools"):
        out["tools"] = chat["tools"]
    return out, []
