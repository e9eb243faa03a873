"""Layouts: which shape a dataset's rows follow, and their normalisation.

Accepted layouts, detected from the first rows' fields (`detect_layout`):

    messages            {"messages": [{"role", "content"}, ...], "system"?: str}  (OpenAI chat)
    sharegpt            {"conversations": [{"from", "value"}, ...], "system"?: str}
                        from: human/user -> user, gpt/assistant/bot/model -> assistant,
                        system, tool/function/observation -> tool
    alpaca              {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
                        -> [system], history turns, user: instruction + "\\n\\n" + input, assistant: output
    prompt_completion   {"prompt", "completion", "system"?}  (strings, or lists of messages)
    text                {"text"}  (continued pretraining)

`normalise_row` turns one row into exactly one of two shapes:

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}
    {"text": str}                         (only for the `text` layout; loss on every token)

Chat rows are checked so the trainer can use every one: roles known, content a non-empty
string (a list of `{"type": "text", "text"}` parts is joined), a system message only
first, the first other message from the user, user and assistant alternating (tool
messages only after an assistant or tool message), at least one assistant message, and
not ending on an unanswered user message. Each problem names the row (1-based: the line
for JSONL, the element/record otherwise), the field and its kind. Never raises on row
content; an unknown layout name raises `InvalidInput`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from core.datasets.records import Problem
from core.errors import InvalidInput

LAYOUTS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "bot": "assistant", "chatgpt": "assistant", "model": "assistant", "system": "system",
    "tool": "tool", "function": "tool", "observation": "tool", "function_response": "tool",
}  # fmt: skip
_SAME_ROLES = {r: r for r in ROLES}


def detect_layout(values: list[Any]) -> str | None:
    """The layout most of these rows follow, or None."""
    votes: Counter[str] = Counter()
    for v in values:
        if not isinstance(v, dict):
            continue
        if "messages" in v:
            votes["messages"] += 1
        elif "conversations" in v:
            votes["sharegpt"] += 1
        elif "instruction" in v and "output" in v:
            votes["alpaca"] += 1
        elif "prompt" in v and "completion" in v:
            votes["prompt_completion"] += 1
        elif "text" in v:
            votes["text"] += 1
    if not votes:
        return None
    return votes.most_common(1)[0][0]


def _content(value: Any, where: str, row: int, problems: list[Problem]) -> str | None:
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # OpenAI content parts
        texts = []
        for p in value:
            if p.get("type") != "text" or not isinstance(p.get("text"), str):
                problems.append(
                    Problem(
                        row,
                        "wrong_type",
                        where,
                        f"{where} has a {p.get('type')!r} part; only text parts are supported",
                    )
                )
                return None
            texts.append(p["text"])
        value = "".join(texts)
    if value is None:
        problems.append(Problem(row, "empty_content", where, f"{where} is missing or null"))
        return None
    if not isinstance(value, str):
        problems.append(
            Problem(row, "wrong_type", where, f"{where} must be text, not {type(value).__name__}")
        )
        return None
    if not value.strip():
        problems.append(Problem(row, "empty_content", where, f"{where} is empty"))
        return None
    return value


def _check_order(
    msgs: list[dict[str, str]], row: int, field_name: str, problems: list[Problem]
) -> None:
    prev: str | None = None
    seen_user = False
    for i, m in enumerate(msgs):
        role = m["role"]
        where = f"{field_name}[{i}]"
        if role == "system":
            if i != 0:
                problems.append(
                    Problem(
                        row,
                        "role_order",
                        where,
                        f"{where} is a system message; only the first message may be one",
                    )
                )
                return
        elif role == "user":
            if prev == "user":
                problems.append(
                    Problem(row, "role_order", where, f"{where}: two user messages in a row")
                )
                return
            seen_user = True
        elif role == "assistant":
            if not seen_user:
                problems.append(
                    Problem(
                        row,
                        "role_order",
                        where,
                        f"{where}: the conversation starts with an assistant message; a user message must come first",
                    )
                )
                return
            if prev == "assistant":
                problems.append(
                    Problem(row, "role_order", where, f"{where}: two assistant messages in a row")
                )
                return
        elif role == "tool" and prev not in ("assistant", "tool"):
            problems.append(
                Problem(
                    row,
                    "role_order",
                    where,
                    f"{where}: a tool message must follow an assistant or tool message",
                )
            )
            return
        prev = role
    if not any(m["role"] == "assistant" for m in msgs):
        problems.append(
            Problem(
                row,
                "missing_assistant",
                field_name,
                "no assistant message: nothing to learn from this row",
            )
        )
    elif msgs[-1]["role"] == "user":
        problems.append(
            Problem(
                row,
                "role_order",
                f"{field_name}[{len(msgs) - 1}]",
                "the conversation ends with a user message that has no answer",
            )
        )


def _messages(raw: Any, row: int, field_name: str, problems: list[Problem], role_key: str = "role",
              content_key: str = "content", role_map: dict[str, str] | None = None) -> list[dict[str, str]]:  # fmt: skip
    if raw is None:
        problems.append(Problem(row, "missing_field", field_name, f"the row has no {field_name!r}"))
        return []
    if not isinstance(raw, list):
        problems.append(
            Problem(
                row,
                "wrong_type",
                field_name,
                f"{field_name} must be a list of messages, not {type(raw).__name__}",
            )
        )
        return []
    if not raw:
        problems.append(Problem(row, "missing_assistant", field_name, f"{field_name} is empty"))
        return []
    out: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        where = f"{field_name}[{i}]"
        if not isinstance(m, dict):
            problems.append(
                Problem(
                    row,
                    "wrong_type",
                    where,
                    f"{where} must be an object with {role_key!r} and {content_key!r}",
                )
            )
            return []
        role = m.get(role_key)
        if role is None:
            problems.append(
                Problem(row, "missing_field", f"{where}.{role_key}", f"{where} has no {role_key!r}")
            )
            return []
        if not isinstance(role, str):
            problems.append(
                Problem(
                    row, "wrong_type", f"{where}.{role_key}", f"{where}.{role_key} must be text"
                )
            )
            return []
        mapped = (role_map or _SAME_ROLES).get(role.strip().lower() if role_map else role)
        if mapped is None:
            allowed = ", ".join(sorted(role_map) if role_map else ROLES)
            problems.append(
                Problem(
                    row,
                    "unknown_role",
                    f"{where}.{role_key}",
                    f"{where}.{role_key} {role[:40]!r} is not one of {allowed}",
                )
            )
            return []
        text = _content(m.get(content_key), f"{where}.{content_key}", row, problems)
        if text is None:
            return []
        out.append({"role": mapped, "content": text})
    return out


def _with_system(
    value: dict[str, Any], msgs: list[dict[str, str]], row: int, problems: list[Problem]
) -> list[dict[str, str]]:
    system = value.get("system")
    if system is None or system == "":
        return msgs
    text = _content(system, "system", row, problems)
    if text is None:
        return msgs
    if msgs and msgs[0]["role"] == "system":
        problems.append(
            Problem(
                row,
                "role_order",
                "system",
                "the row has both a 'system' field and a system message",
            )
        )
        return msgs
    return [{"role": "system", "content": text}, *msgs]


def _fast_chat(
    raw: Any, role_key: str, content_key: str, role_map: dict[str, str] | None
) -> list[dict[str, str]] | None:
    """The messages when the row is clean (the common case), checked in one pass without
    building any problem; None sends the row to the full checks, which name the problem."""
    if type(raw) is not list or not raw:
        return None
    roles = role_map or _SAME_ROLES
    out: list[dict[str, str]] = []
    prev = ""
    seen_user = seen_assistant = False
    for i, m in enumerate(raw):
        if type(m) is not dict:
            return None
        role, text = m.get(role_key), m.get(content_key)
        if type(role) is not str or type(text) is not str or not text or text.isspace():
            return None
        mapped = roles.get(role) or (roles.get(role.strip().lower()) if role_map else None)
        if mapped is None or mapped == prev and mapped != "tool":
            return None
        if mapped == "system":
            if i:
                return None
        elif mapped == "user":
            seen_user = True
        elif mapped == "assistant":
            if not seen_user:
                return None
            seen_assistant = True
        elif prev not in ("assistant", "tool"):
            return None
        prev = mapped
        # A message already in the normalised shape is kept as it is.
        out.append(m if role_map is None and len(m) == 2 else {"role": mapped, "content": text})
    if prev == "user" or not seen_assistant:
        return None
    return out


def _fast_openai(raw: Any) -> list[dict[str, str]] | None:
    """`_fast_chat` for OpenAI messages, the most common layout: the list itself when every
    message is exactly {role, content} and the conversation is in order."""
    if type(raw) is not list or not raw:
        return None
    prev = ""
    seen_user = seen_assistant = False
    exact = True
    for m in raw:
        if type(m) is not dict:
            return None
        text = m.get("content")
        if type(text) is not str or not text or text.isspace():
            return None
        role = m.get("role")
        if role == "user":
            if prev == "user":
                return None
            seen_user = True
        elif role == "assistant":
            if prev == "assistant" or not seen_user:
                return None
            seen_assistant = True
        elif role == "system":
            if prev:
                return None
        elif role == "tool":
            if prev != "assistant" and prev != "tool":
                return None
        else:
            return None
        prev = role
        if len(m) != 2:
            exact = False
    if prev == "user" or not seen_assistant:
        return None
    return raw if exact else [{"role": m["role"], "content": m["content"]} for m in raw]


def normalise_row(value: Any, layout: str, row: int) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The normalised row, or None and the problems that make it unusable."""
    if type(value) is dict and not value.get("system"):
        if layout == "messages":
            fast = _fast_openai(value.get("messages"))
        elif layout == "sharegpt":
            fast = _fast_chat(value.get("conversations"), "from", "value", SHAREGPT_ROLES)
        else:
            fast = None
        if fast is not None:
            return {"messages": fast}, []
    return normalise_row_checked(value, layout, row)


def normalise_row_checked(
    value: Any, layout: str, row: int
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """`normalise_row` through the full checks only (what the fast path must agree with)."""
    problems: list[Problem] = []
    if not isinstance(value, dict):
        return None, [
            Problem(
                row,
                "not_an_object",
                "",
                f"the row is {type(value).__name__}, not an object with fields",
            )
        ]
    if layout == "text":
        if "text" not in value:
            return None, [Problem(row, "missing_field", "text", "the row has no 'text'")]
        text = _content(value.get("text"), "text", row, problems)
        return ({"text": text} if text is not None else None), problems
    if layout == "messages":
        msgs = _messages(value.get("messages"), row, "messages", problems)
    elif layout == "sharegpt":
        msgs = _messages(
            value.get("conversations"),
            row,
            "conversations",
            problems,
            "from",
            "value",
            SHAREGPT_ROLES,
        )
    elif layout == "alpaca":
        msgs = _alpaca(value, row, problems)
    elif layout == "prompt_completion":
        msgs = _prompt_completion(value, row, problems)
    else:
        raise InvalidInput(f"unknown layout {layout!r}")
    if problems:
        return None, problems
    if layout in ("messages", "sharegpt", "prompt_completion"):
        msgs = _with_system(value, msgs, row, problems)
    if not problems:
        _check_order(msgs, row, "messages" if layout != "sharegpt" else "conversations", problems)
    if problems:
        return None, problems
    return {"messages": msgs}, problems


def _alpaca(value: dict[str, Any], row: int, problems: list[Problem]) -> list[dict[str, str]]:
    for key in ("instruction", "output"):
        if key not in value:
            problems.append(Problem(row, "missing_field", key, f"the row has no {key!r}"))
    if problems:
        return []
    instruction = _content(value.get("instruction"), "instruction", row, problems)
    output = _content(value.get("output"), "output", row, problems)
    extra = value.get("input")
    if extra is not None and not isinstance(extra, str):
        problems.append(
            Problem(row, "wrong_type", "input", f"input must be text, not {type(extra).__name__}")
        )
    msgs: list[dict[str, str]] = []
    system = value.get("system")
    if system not in (None, ""):
        text = _content(system, "system", row, problems)
        if text is not None:
            msgs.append({"role": "system", "content": text})
    history = value.get("history")
    if history not in (None, "", []):
        if not isinstance(history, list):
            problems.append(
                Problem(
                    row,
                    "wrong_type",
                    "history",
                    "history must be a list of [question, answer] pairs",
                )
            )
        else:
            for i, pair in enumerate(history):
                if not (isinstance(pair, list | tuple) and len(pair) == 2):
                    problems.append(
                        Problem(
                            row,
                            "wrong_type",
                            f"history[{i}]",
                            f"history[{i}] must be a [question, answer] pair",
                        )
                    )
                    break
                q = _content(pair[0], f"history[{i}][0]", row, problems)
                a = _content(pair[1], f"history[{i}][1]", row, problems)
                if q is None or a is None:
                    break
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if problems or instruction is None or output is None:
        return []
    prompt = instruction + ("\n\n" + extra if isinstance(extra, str) and extra.strip() else "")
    return [*msgs, {"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _prompt_completion(
    value: dict[str, Any], row: int, problems: list[Problem]
) -> list[dict[str, str]]:
    prompt, completion = value.get("prompt"), value.get("completion")
    for key, v in (("prompt", prompt), ("completion", completion)):
        if v is None:
            problems.append(Problem(row, "missing_field", key, f"the row has no {key!r}"))
    if problems:
        return []
    if isinstance(prompt, list):
        p_msgs = _messages(prompt, row, "prompt", problems)
    else:
        text = _content(prompt, "prompt", row, problems)
        p_msgs = [{"role": "user", "content": text}] if text is not None else []
    if isinstance(completion, list):
        c_msgs = _messages(completion, row, "completion", problems)
    else:
        text = _content(completion, "completion", row, problems)
        c_msgs = [{"role": "assistant", "content": text}] if text is not None else []
    return [*p_msgs, *c_msgs] if not problems else []
