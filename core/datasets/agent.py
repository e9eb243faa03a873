"""Agent rows: tools, tool calls, tool results and reasoning, for `core.datasets.layouts`.

What a chat message may carry besides its role and text, as the layouts give it:

    content             a string, or parts: {"type": "text", "text"|"value"},
                        {"type": "reasoning"|"thinking", "text"|"value"|"thinking"}, and
                        (assistant) {"type": "tool_call", "value": JSON call {"name",
                        "arguments"}} (LLaMA-Factory v1)
    tool_calls          (assistant) [{"id"?, "type": "function", "function": {"name",
                        "arguments": JSON text or object}}], or [{"name", "arguments"}]
    function_call       (assistant) {"name", "arguments"}: OpenAI's legacy function calling,
                        one call; its result is a message of role "function" with the
                        function's `name`, and the row's functions are `functions` (schemas
                        without the {"type": "function"} wrapper); read as `tool_calls`,
                        a tool message and `tools`
    tool_call_id, name  (tool) which call a result answers
    reasoning_content   (assistant; `reasoning` and `thinking` are read the same), or an
                        inline "<think>...</think>" opening its content
    loss_weight         0 or 1 (0: the message is context only, it carries no loss);
    weight              the same, as OpenAI's chat fine-tuning format names it (an
                        assistant message with weight 0 is not trained on). 1 on a message
                        that is not the assistant's is refused: only assistant turns carry
                        loss here, so that meaning could not be honoured.

ShareGPT rows give a call as a `function_call` turn whose value is the JSON call
`{"name", "arguments"}` (or a list of them: parallel calls), results as `observation`
turns, and the functions as a row-level `tools` (a JSON string or a list).

The normalised form (what the trainer reads, `trainer.shared.tokens`): messages keep `role` and
`content` (a string, "" for an assistant turn that only calls), plus `tool_calls` (each
`{"type": "function", "function": {"name", "arguments": object}}`, with its `id` when given),
`reasoning_content`, `loss_weight` (only when 0), `tool_call_id` / `name`; the row keeps
`tools` as a list of `{"type": "function", "function": {...}}`.

Checked, each problem naming the field: arguments that are not a JSON object, a call to a
function the row's `tools` does not define, a tool message that answers no call (in a row
that defines tools or makes structured calls; older rows whose calls are plain text keep
their tool messages), a content part whose keys are not understood (the keys it has are
named), a loss_weight or weight other than 0 or 1 (or the two disagreeing), and a `tools`
that is not a list of function schemas.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_ROLES = frozenset({"function_call", "tool_call", "tool_calls"})
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
# Keys that make a message an agent message (the layouts' fast path leaves these alone).
WEIGHT_KEYS = ("loss_weight", "weight")
LEGACY_CALL = "function_call"  # OpenAI's legacy function calling: one call per message
LEGACY_FUNCTIONS = "functions"  # ... and the row's functions
AGENT_KEYS = frozenset({"tool_calls", "tool_call_id", LEGACY_CALL, *WEIGHT_KEYS, *REASONING_KEYS})
_TEXT_PART_KEYS = ("text", "value", "content")
_REASONING_PART_KEYS = ("value", "text", "reasoning", "thinking")


class Parts:
    """Content parts read as (text, reasoning, calls); `error` names what was not
    understood. `calls` holds each `tool_call` part's value and where it is."""

    def __init__(self, value: list[Any], where: str) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[tuple[Any, str]] = []
        self.error: str | None = None
        for i, part in enumerate(value):
            self._read(part, f"{where}[{i}]")
            if self.error:
                return

    def _read(self, part: Any, where: str) -> None:
        if not isinstance(part, dict):
            self.error = f"{where} must be an object like {{'type': 'text', 'text': ...}}"
            return
        kind = part.get("type", "text")
        if kind == "tool_call":
            self.calls.append((part.get("value", part.get("text")), f"{where}.value"))
            return
        keys = _TEXT_PART_KEYS if kind == "text" else _REASONING_PART_KEYS
        if kind not in ("text", "reasoning", "thinking"):
            self.error = (
                f"{where} is a {str(kind)[:30]!r} part; only text, reasoning and tool_call parts "
                "are supported"
            )
            return
        key = next((k for k in keys if isinstance(part.get(k), str)), None)
        if key is None:
            has = ", ".join(repr(k) for k in sorted(part)[:8])
            self.error = (
                f"{where} is a {kind} part whose keys ({has}) are not understood: its text "
                f"goes under one of {', '.join(repr(k) for k in keys)}"
            )
            return
        (self.text if kind == "text" else self.reasoning).append(part[key])


def is_agent_message(m: dict[str, Any], role_key: str, content_key: str) -> bool:
    """Whether a message needs this module: agent keys, content parts, inline <think>, or
    a call turn."""
    content = m.get(content_key)
    if isinstance(content, list) or (isinstance(content, str) and THINK_OPEN in content):
        return True
    role = m.get(role_key)
    if isinstance(role, str) and role.strip().lower() in CALL_ROLES:
        return True
    return any(m.get(k) is not None for k in AGENT_KEYS)


def split_think(text: str) -> tuple[str, str | None]:
    """(answer, reasoning) of a text that opens with an inline <think> block."""
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN) or THINK_CLOSE not in stripped:
        return text, None
    inner, _, rest = stripped[len(THINK_OPEN) :].partition(THINK_CLOSE)
    return rest.lstrip("\n"), inner.strip("\n")


def parse_arguments(raw: Any, where: str) -> tuple[dict[str, Any] | None, str | None]:
    """A call's arguments as an object, or the problem (not JSON, or not an object)."""
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as e:
            return None, f"{where} is not valid JSON ({e.msg} at character {e.pos})"
    if not isinstance(raw, dict):
        return None, f"{where} must be a JSON object of named arguments, not {type(raw).__name__}"
    return raw, None


def parse_call(raw: Any, where: str) -> tuple[dict[str, Any] | None, str | None]:
    """One tool call in our form, or the problem."""
    if not isinstance(raw, dict):
        return None, f"{where} must be an object with a function name and arguments"
    fn = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    at = f"{where}.function" if fn is not raw else where
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, f"{at}.name is missing: a call must name its function"
    args, problem = parse_arguments(fn.get("arguments", fn.get("parameters")), f"{at}.arguments")
    if problem:
        return None, problem
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": args}}
    if isinstance(raw.get("id"), str) and raw["id"]:
        call["id"] = raw["id"]
    return call, None


def parse_calls(raw: Any, where: str) -> tuple[list[dict[str, Any]], str | None]:
    """A message's tool calls (a list, or one call), or the first problem."""
    items = raw if isinstance(raw, list) else [raw]
    calls = []
    for i, item in enumerate(items):
        call, problem = parse_call(item, f"{where}[{i}]" if isinstance(raw, list) else where)
        if problem:
            return [], problem
        calls.append(call)
    return calls, None


def parse_tools(raw: Any, field: str = "tools") -> tuple[list[dict[str, Any]] | None, str | None]:
    """A row's `tools` (or OpenAI's legacy `functions`: `field`) as function schemas (None
    when it has none), or the problem."""
    if raw is None or raw == "" or raw == []:
        return None, None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as e:
            return None, f"{field} is not valid JSON ({e.msg} at character {e.pos})"
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        return None, f"{field} must be a list of function schemas, not {type(raw).__name__}"
    out = []
    for i, t in enumerate(raw):
        fn = t.get("function") if isinstance(t, dict) and "function" in t else t
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            return None, f"{field}[{i}] must be a function schema with a 'name'"
        out.append({"type": "function", "function": fn})
    return out, None


def tool_names(tools: list[dict[str, Any]] | None) -> set[str]:
    return {t["function"]["name"] for t in tools or []}


# --------------------------------------------------------------------------- one message


def agent_message(
    m: dict[str, Any], where: str, role: str, content_key: str, problems: Any
) -> dict[str, Any] | None:
    """One message in our form (`role` is ours, or a ShareGPT call role), or None with its
    problem added to `problems` (anything with `add(kind, field, message)`)."""
    at = f"{where}.{content_key}"
    if role in CALL_ROLES:
        call = _call_turn(m.get(content_key), at, problems)
        return call if call is not None and _loss_weight(m, call, where, problems) else None
    raw = m.get(content_key)
    reasoning: str | None = None
    part_calls: list[dict[str, Any]] = []
    if isinstance(raw, list):
        parts = Parts(raw, at)
        if parts.error:
            problems.add("unknown_part", at, parts.error)
            return None
        text, reasoning = "".join(parts.text), "\n".join(parts.reasoning) or None
        if parts.calls and not _part_calls(parts, role, at, part_calls, problems):
            return None
    elif raw is None or isinstance(raw, str):
        text = raw or ""
    else:
        problems.add(
            "wrong_type", at, f"{at} must be text or a list of parts, not {type(raw).__name__}"
        )
        return None
    msg: dict[str, Any] = {"role": role, "content": text}
    if role == "assistant":
        if not _assistant_extras(m, msg, reasoning, where, problems):
            return None
        if part_calls:
            msg["tool_calls"] = [*msg.get("tool_calls", ()), *part_calls]
    elif reasoning is not None or _reasoning_field(m) is not None:
        problems.add(
            "wrong_type", at, f"{where} is a {role} message; only assistant messages reason"
        )
        return None
    elif role == "tool":
        msg.update(
            {k: m[k] for k in ("tool_call_id", "name") if isinstance(m.get(k), str) and m[k]}
        )
    if not _loss_weight(m, msg, where, problems):
        return None
    if not (msg["content"].strip() or msg.get("tool_calls") or msg.get("reasoning_content")):
        problems.add("empty_content", at, f"{at} is empty")
        return None
    return msg


def _part_calls(parts: Parts, role: str, at: str, out: list[dict[str, Any]], problems: Any) -> bool:
    """The calls of `tool_call` content parts (LLaMA-Factory v1: each value is the JSON
    call) into `out`; False with the problem when one is wrong or the role cannot call."""
    if role != "assistant":
        problems.add(
            "invalid_tool_call", at, f"{at} has tool_call parts; only assistant messages call"
        )
        return False
    for raw, where in parts.calls:
        calls = _json_calls(raw, where, problems)
        if calls is None:
            return False
        out.extend(calls)
    return True


def _json_calls(raw: Any, at: str, problems: Any) -> list[dict[str, Any]] | None:
    """The calls in `raw` (a call, a list of calls, or either as JSON text); None with the
    problem added when it is not one."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError as e:
            problems.add(
                "invalid_tool_call",
                at,
                f"{at} is not a JSON tool call ({e.msg} at character {e.pos}); expected "
                '{"name": ..., "arguments": {...}}',
            )
            return None
    calls, problem = parse_calls(value, at)
    if problem:
        problems.add("invalid_tool_call", at, problem)
        return None
    return calls


def _reasoning_field(m: dict[str, Any]) -> str | None:
    return next((m[k] for k in REASONING_KEYS if isinstance(m.get(k), str) and m[k].strip()), None)


def _assistant_extras(
    m: dict[str, Any], msg: dict[str, Any], reasoning: str | None, where: str, problems: Any
) -> bool:
    """An assistant message's reasoning and tool calls into `msg`; False on a problem."""
    reasoning = reasoning or _reasoning_field(m)
    if reasoning is None:
        msg["content"], reasoning = split_think(msg["content"])
    if reasoning and reasoning.strip():
        msg["reasoning_content"] = reasoning
    calls: list[dict[str, Any]] = []
    raw_calls = m.get("tool_calls")
    if raw_calls is not None and raw_calls != []:
        if not isinstance(raw_calls, list):
            problems.add(
                "invalid_tool_call",
                f"{where}.tool_calls",
                f"{where}.tool_calls must be a list of calls",
            )
            return False
        calls, problem = parse_calls(raw_calls, f"{where}.tool_calls")
        if problem:
            problems.add("invalid_tool_call", f"{where}.tool_calls", problem)
            return False
    legacy = m.get(LEGACY_CALL)
    if legacy is not None and legacy != {}:
        call, problem = parse_call(legacy, f"{where}.{LEGACY_CALL}")
        if call is None:
            problems.add("invalid_tool_call", f"{where}.{LEGACY_CALL}", problem)
            return False
        calls.append(call)
    if calls:
        msg["tool_calls"] = calls
    return True


def _call_turn(raw: Any, at: str, problems: Any) -> dict[str, Any] | None:
    """A ShareGPT `function_call` turn: its value is the JSON call (or a list of calls)."""
    calls = _json_calls(raw, at, problems)
    if calls is None:
        return None
    return {"role": "assistant", "content": "", "tool_calls": calls}


def _loss_weight(m: dict[str, Any], msg: dict[str, Any], where: str, problems: Any) -> bool:
    """A message's `loss_weight` or `weight` (OpenAI's name for it): 0 is kept as
    `loss_weight` 0 (no loss on the message); 1 is the default for an assistant message
    and cannot be honoured on another (only assistant turns carry loss). False with the
    problem when a weight is not 0 or 1, the two keys disagree, or 1 is on another role."""
    given = [(k, m[k]) for k in WEIGHT_KEYS if m.get(k) is not None]
    if not given:
        return True
    for key, w in given:
        if isinstance(w, bool) or not isinstance(w, int | float) or w not in (0, 1):
            field = f"{where}.{key}"
            problems.add("wrong_type", field, f"{field} must be 0 or 1, not {w!r}"[:200])
            return False
    if len({w for _, w in given}) > 1:
        problems.add(
            "wrong_type",
            f"{where}.weight",
            f"{where} has loss_weight {given[0][1]!r} and weight {given[1][1]!r}; they disagree",
        )
        return False
    key, w = given[0]
    if w == 0:
        msg["loss_weight"] = 0
    elif msg["role"] != "assistant":
        field = f"{where}.{key}"
        problems.add(
            "unhonoured_key",
            field,
            f"{field} is 1 on a {msg['role']} message: only assistant messages are trained on "
            "here; set it to 0 or remove it",
        )
        return False
    return True


# --------------------------------------------------------------------------- one row


def check_row(
    value: dict[str, Any],
    msgs: list[dict[str, Any]],
    field: str | Callable[[int], str],
    problems: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) of a row once its calls are checked against its `tools` and its
    tool messages against its calls; a call-only assistant turn right after an assistant
    text turn (ShareGPT's gpt then function_call) joins it. `field` names the messages in
    problems: the row's field, or a function from a message's index to where it is (a
    prompt/completion row's messages come from two fields)."""
    tools, problem = parse_tools(value.get("tools"))
    if problem:
        problems.add("invalid_tools", "tools", problem)
        return msgs, None
    legacy, problem = parse_tools(value.get(LEGACY_FUNCTIONS), LEGACY_FUNCTIONS)
    if problem:
        problems.add("invalid_tools", LEGACY_FUNCTIONS, problem)
        return msgs, None
    if legacy:
        tools = [*(tools or []), *legacy]
    structured = tools is not None or any(m.get("tool_calls") for m in msgs)
    if structured:
        where = field if callable(field) else lambda i: f"{field}[{i}]"
        _check_calls(msgs, where, tool_names(tools) if tools is not None else None, problems)
    return _join_call_turns(msgs), tools


def _check_calls(
    msgs: list[dict[str, Any]],
    locate: Callable[[int], str],
    names: set[str] | None,
    problems: Any,
) -> None:
    ids: set[str] = set()
    open_calls = 0  # calls of the last assistant turn not yet answered
    for i, m in enumerate(msgs):
        where = locate(i)
        if m["role"] == "assistant":
            calls = m.get("tool_calls") or []
            open_calls = len(calls)
            for j, call in enumerate(calls):
                name = call["function"]["name"]
                if names is not None and name not in names:
                    defined = ", ".join(sorted(names)) or "none"
                    problems.add(
                        "unknown_function",
                        f"{where}.tool_calls[{j}]",
                        f"{where}.tool_calls[{j}] calls {name[:60]!r}, which the row's tools "
                        f"do not define (defined: {defined[:200]})",
                    )
                    return
                ids.update([call["id"]] if "id" in call else [])
        elif m["role"] == "tool":
            error = _answers_nothing(m, ids, open_calls, where)
            if error:
                problems.add("unanswered_tool_message", where, error)
                return
            open_calls -= 1
        elif m["role"] == "user":
            open_calls = 0


def _answers_nothing(m: dict[str, Any], ids: set[str], open_calls: int, where: str) -> str | None:
    call_id = m.get("tool_call_id")
    if call_id is not None and ids and call_id not in ids:
        return f"{where} is a tool result for call {call_id[:60]!r}, which no earlier call has as its id"
    if open_calls <= 0:
        return f"{where} is a tool result that answers no call: the assistant turn before it made no (more) tool calls"
    return None


def _join_call_turns(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in msgs:
        prev = out[-1] if out else None
        joinable = (
            prev is not None
            and prev["role"] == m["role"] == "assistant"
            and not prev.get("tool_calls")
            and m.get("tool_calls")
            and not m["content"]
            and "reasoning_content" not in m
            and prev.get("loss_weight", 1) == m.get("loss_weight", 1)
        )
        if joinable:
            out[-1] = {**prev, "tool_calls": m["tool_calls"]}
        else:
            out.append(m)
    return out
