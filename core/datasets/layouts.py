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

Tool-calling and reasoning rows (OpenAI `tools`/`tool_calls`/`tool` messages, ShareGPT
`function_call`/`observation` turns, content parts, `reasoning_content` or inline <think>,
per-message `loss_weight`) are read by `core.datasets.agent`; a chat row that defines
functions normalises to `{"messages": [...], "tools": [...]}`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from core.datasets import agent
from core.datasets.records import Problem
from core.errors import InvalidInput

LAYOUTS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "function_response": "tool",
}
# OpenAI's own role names, and its legacy function calling's role for a function's result
_SAME_ROLES = {r: r for r in ROLES} | {"function": "tool"}
_AGENT_KEYS = agent.AGENT_KEYS
_THINK = agent.THINK_OPEN

Message = dict[str, Any]


class _ChatKeys(NamedTuple):
    """How a layout's messages name their role and text; `roles` maps its role names
    (compared stripped and lower-cased) to ours, None when they are ours already."""

    role: str
    content: str
    roles: dict[str, str] | None


_OPENAI = _ChatKeys("role", "content", None)
_SHAREGPT = _ChatKeys("from", "value", SHAREGPT_ROLES)
_CHATS = {"messages": ("messages", _OPENAI), "sharegpt": ("conversations", _SHAREGPT)}


class _Problems(list[Problem]):
    """The problems found in one row."""

    def __init__(self, row: int) -> None:
        super().__init__()
        self.row = row

    def add(self, kind: str, field: str, message: str) -> None:
        self.append(Problem(self.row, kind, field, message))


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


def normalise_row(value: Any, layout: str, row: int) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The normalised row, or None and the problems that make it unusable."""
    if (
        type(value) is dict
        and not value.get("system")
        and layout in _CHATS
        and "tools" not in value
    ):
        field_name, keys = _CHATS[layout]
        fast = _fast_messages(value.get(field_name), keys)
        if fast is not None:
            return {"messages": fast}, []
    return normalise_row_checked(value, layout, row)


def normalise_row_checked(
    value: Any, layout: str, row: int
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """`normalise_row` through the full checks only (what the fast path must agree with)."""
    if not isinstance(value, dict):
        kind = type(value).__name__
        return None, [
            Problem(row, "not_an_object", "", f"the row is {kind}, not an object with fields")
        ]
    problems = _Problems(row)
    if layout == "text":
        if "text" not in value:
            return None, [Problem(row, "missing_field", "text", "the row has no 'text'")]
        text = _content(value.get("text"), "text", problems)
        return ({"text": text} if text is not None else None), list(problems)
    msgs = _chat_messages(value, layout, problems)
    field_name = "conversations" if layout == "sharegpt" else "messages"
    tools = None
    if not problems and layout in _CHATS:
        msgs, tools = agent.check_row(value, msgs, field_name, problems)
    elif not problems and layout == "prompt_completion":
        msgs, tools = agent.check_row(value, msgs, _prompt_completion_at(value), problems)
    if not problems and layout != "alpaca":
        msgs = _with_system(value, msgs, problems)
    if not problems:
        _check_order(msgs, field_name, problems)
    if problems:
        return None, list(problems)
    return ({"messages": msgs, "tools": tools} if tools else {"messages": msgs}), []


# --------------------------------------------------------------------------- the fast path


def _fast_messages(raw: Any, keys: _ChatKeys) -> list[Message] | None:
    """The messages when the row is clean (the common case), checked in one pass without
    building any problem; None sends the row to the full checks, which name the problem.
    OpenAI messages that are exactly {role, content} are kept as they are."""
    if type(raw) is not list or not raw:
        return None
    roles = keys.roles
    prev = ""
    seen_user = seen_assistant = False
    exact = roles is None
    for m in raw:
        if type(m) is not dict:
            return None
        text = m.get(keys.content)
        if type(text) is not str or not text or text.isspace():
            return None
        role = m.get(keys.role)
        if roles is not None:
            if type(role) is not str:
                return None
            role = roles.get(role) or roles.get(role.strip().lower())
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
        elif role != "tool" or (prev != "assistant" and prev != "tool"):
            return None
        prev = role
        if len(m) != 2:
            exact = False
            if not _AGENT_KEYS.isdisjoint(m):
                return None
        if role == "assistant" and _THINK in text:
            return None
    if prev == "user" or not seen_assistant:
        return None
    if exact:
        return raw
    if roles is None:
        return [{"role": m["role"], "content": m["content"]} for m in raw]
    return [{"role": _our_role(roles, m[keys.role]), "content": m[keys.content]} for m in raw]


def _our_role(roles: dict[str, str], role: str) -> str:
    return roles.get(role) or roles[role.strip().lower()]


# --------------------------------------------------------------------------- the full checks


def _content(value: Any, where: str, problems: _Problems) -> str | None:
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # content parts
        parts = agent.Parts(value, where)
        if parts.error or parts.reasoning or parts.calls:
            error = parts.error or (
                f"{where} has {'reasoning' if parts.reasoning else 'tool_call'} parts; only "
                "assistant messages reason or call tools"
            )
            problems.add("unknown_part", where, error)
            return None
        value = "".join(parts.text)
    if value is None:
        problems.add("empty_content", where, f"{where} is missing or null")
        return None
    if not isinstance(value, str):
        problems.add("wrong_type", where, f"{where} must be text, not {type(value).__name__}")
        return None
    if not value.strip():
        problems.add("empty_content", where, f"{where} is empty")
        return None
    return value


def _chat_messages(value: dict[str, Any], layout: str, problems: _Problems) -> list[Message]:
    if layout in _CHATS:
        field_name, keys = _CHATS[layout]
        return _messages(value.get(field_name), field_name, problems, keys)
    if layout == "alpaca":
        return _alpaca(value, problems)
    if layout == "prompt_completion":
        return _prompt_completion(value, problems)
    raise InvalidInput(f"unknown layout {layout!r}")


def _messages(
    raw: Any, field_name: str, problems: _Problems, keys: _ChatKeys = _OPENAI
) -> list[Message]:
    """A list of chat messages, each checked; [] and its problem at the first bad one."""
    if raw is None:
        problems.add("missing_field", field_name, f"the row has no {field_name!r}")
        return []
    if not isinstance(raw, list):
        problems.add(
            "wrong_type",
            field_name,
            f"{field_name} must be a list of messages, not {type(raw).__name__}",
        )
        return []
    if not raw:
        problems.add("missing_assistant", field_name, f"{field_name} is empty")
        return []
    out: list[Message] = []
    for i, m in enumerate(raw):
        msg = _message(m, f"{field_name}[{i}]", problems, keys)
        if msg is None:
            return []
        out.append(msg)
    return out


def _message(m: Any, where: str, problems: _Problems, keys: _ChatKeys) -> Message | None:
    if not isinstance(m, dict):
        problems.add(
            "wrong_type",
            where,
            f"{where} must be an object with {keys.role!r} and {keys.content!r}",
        )
        return None
    role = m.get(keys.role)
    field = f"{where}.{keys.role}"
    if role is None:
        problems.add("missing_field", field, f"{where} has no {keys.role!r}")
        return None
    if not isinstance(role, str):
        problems.add("wrong_type", field, f"{field} must be text")
        return None
    roles = keys.roles
    if roles and role.strip().lower() in agent.CALL_ROLES:  # ShareGPT's function_call turn
        return agent.agent_message(m, where, role.strip().lower(), keys.content, problems)
    mapped = roles.get(role.strip().lower()) if roles else _SAME_ROLES.get(role)
    if mapped is None:
        allowed = ", ".join(sorted([*roles, "function_call"]) if roles else ROLES)
        problems.add("unknown_role", field, f"{field} {role[:40]!r} is not one of {allowed}")
        return None
    if agent.is_agent_message(m, keys.role, keys.content):
        return agent.agent_message(m, where, mapped, keys.content, problems)
    text = _content(m.get(keys.content), f"{where}.{keys.content}", problems)
    return None if text is None else {"role": mapped, "content": text}


def _with_system(value: dict[str, Any], msgs: list[Message], problems: _Problems) -> list[Message]:
    system = value.get("system")
    if system is None or system == "":
        return msgs
    text = _content(system, "system", problems)
    if text is None:
        return msgs
    if msgs and msgs[0]["role"] == "system":
        problems.add(
            "role_order", "system", "the row has both a 'system' field and a system message"
        )
        return msgs
    return [{"role": "system", "content": text}, *msgs]


def _order_error(role: str, prev: str | None, seen_user: bool, where: str) -> str | None:
    """What is wrong with a message of `role` after one of `prev` (None: it is the first)."""
    if role == "system":
        if prev is None:
            return None
        return f"{where} is a system message; only the first message may be one"
    if role == "user":
        return f"{where}: two user messages in a row" if prev == "user" else None
    if role == "assistant":
        if not seen_user:
            return (
                f"{where}: the conversation starts with an assistant message; "
                "a user message must come first"
            )
        return f"{where}: two assistant messages in a row" if prev == "assistant" else None
    if role == "tool" and prev not in ("assistant", "tool"):
        return f"{where}: a tool message must follow an assistant or tool message"
    return None


def _check_order(msgs: list[Message], field_name: str, problems: _Problems) -> None:
    prev: str | None = None
    seen_user = False
    for i, m in enumerate(msgs):
        role = m["role"]
        where = f"{field_name}[{i}]"
        error = _order_error(role, prev, seen_user, where)
        if error is not None:
            problems.add("role_order", where, error)
            return
        seen_user = seen_user or role == "user"
        prev = role
    if not any(m["role"] == "assistant" for m in msgs):
        problems.add(
            "missing_assistant", field_name, "no assistant message: nothing to learn from this row"
        )
    elif msgs[-1]["role"] == "user":
        problems.add(
            "role_order",
            f"{field_name}[{len(msgs) - 1}]",
            "the conversation ends with a user message that has no answer",
        )


def _alpaca(value: dict[str, Any], problems: _Problems) -> list[Message]:
    for key in ("instruction", "output"):
        if key not in value:
            problems.add("missing_field", key, f"the row has no {key!r}")
    if problems:
        return []
    instruction = _content(value.get("instruction"), "instruction", problems)
    output = _content(value.get("output"), "output", problems)
    extra = value.get("input")
    if extra is not None and not isinstance(extra, str):
        problems.add("wrong_type", "input", f"input must be text, not {type(extra).__name__}")
    msgs: list[Message] = []
    system = value.get("system")
    if system not in (None, ""):
        text = _content(system, "system", problems)
        if text is not None:
            msgs.append({"role": "system", "content": text})
    msgs += _history(value.get("history"), problems)
    if problems or instruction is None or output is None:
        return []
    prompt = instruction + ("\n\n" + extra if isinstance(extra, str) and extra.strip() else "")
    return [*msgs, {"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _history(history: Any, problems: _Problems) -> list[Message]:
    """Alpaca's earlier turns, [[question, answer], ...], as user and assistant messages."""
    if history in (None, "", []):
        return []
    if not isinstance(history, list):
        problems.add("wrong_type", "history", "history must be a list of [question, answer] pairs")
        return []
    msgs: list[Message] = []
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            problems.add(
                "wrong_type", f"history[{i}]", f"history[{i}] must be a [question, answer] pair"
            )
            break
        q = _content(pair[0], f"history[{i}][0]", problems)
        a = _content(pair[1], f"history[{i}][1]", problems)
        if q is None or a is None:
            break
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs


def _prompt_completion(value: dict[str, Any], problems: _Problems) -> list[Message]:
    prompt, completion = value.get("prompt"), value.get("completion")
    for key, v in (("prompt", prompt), ("completion", completion)):
        if v is None:
            problems.add("missing_field", key, f"the row has no {key!r}")
    if problems:
        return []
    msgs = [*_side(prompt, "prompt", "user", problems)]
    msgs += _side(completion, "completion", "assistant", problems)
    return msgs if not problems else []


def _prompt_completion_at(value: dict[str, Any]) -> Any:
    """Where a prompt/completion row's i-th message is: `prompt[i]`, or `completion[j]`
    after the prompt's messages (a text prompt is one message)."""
    prompt = value.get("prompt")
    n = len(prompt) if isinstance(prompt, list) else 1

    def at(i: int) -> str:
        if i < n:
            return f"prompt[{i}]" if isinstance(prompt, list) else "prompt"
        completion = value.get("completion")
        return f"completion[{i - n}]" if isinstance(completion, list) else "completion"

    return at


def _side(value: Any, key: str, role: str, problems: _Problems) -> list[Message]:
    """The prompt or the completion: a list of messages, or text as one message of `role`."""
    if isinstance(value, list):
        return _messages(value, key, problems)
    text = _content(value, key, problems)
    return [{"role": role, "content": text}] if text is not None else []
