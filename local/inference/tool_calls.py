"""Tools and reasoning for the local server, the way vLLM serves Qwen models.

Requests: `tools` (OpenAI function schemas) and `chat_template_kwargs` (e.g.
`{"enable_thinking": false}`) go to the chat template; an assistant message's `tool_calls`
(arguments as JSON text, as OpenAI sends them) and a tool message's `tool_call_id` are kept
for the template, so a conversation continues after a tool result.

Answers: like vLLM's `hermes` tool-call parser (`--enable-auto-tool-choice
--tool-call-parser hermes`), each `<tool_call>{"name", "arguments"}</tool_call>` block of
the generated text becomes an OpenAI tool call (`id`, `type: function`,
`function.arguments` as JSON text) when the request has `tools`; a block that is not valid
JSON with a name stays in the content. Like vLLM's `qwen3` reasoning parser, an opening
`<think>...</think>` becomes `reasoning_content`. Only whole (non-streamed) answers are
parsed; a streamed answer carries the generated text as it is.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from local.inference.protocol import ChatRequest, bad_request

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_KEEP = ("tool_calls", "tool_call_id", "name", "reasoning_content")


def template_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """The request's messages as the chat template takes them."""
    out = []
    for i, m in enumerate(req.messages):
        msg: dict[str, Any] = {"role": m.role, "content": _text(m.content, i)}
        extra = m.model_extra or {}
        msg.update({k: extra[k] for k in _KEEP if extra.get(k) is not None})
        out.append(msg)
    return out


def template_kwargs(req: ChatRequest) -> dict[str, Any]:
    """`tools` and `chat_template_kwargs` of the request, for `apply_chat_template`."""
    extra = req.model_extra or {}
    kwargs = dict(extra.get("chat_template_kwargs") or {})
    if not isinstance(kwargs, dict):
        raise bad_request("chat_template_kwargs must be an object", "chat_template_kwargs")
    tools = extra.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise bad_request("tools must be a list of function schemas", "tools")
        kwargs["tools"] = tools
    return kwargs


def wants_tools(req: ChatRequest) -> bool:
    extra = req.model_extra or {}
    return bool(extra.get("tools")) and extra.get("tool_choice", "auto") != "none"


def _text(content: str | list[dict[str, Any]] | None, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise bad_request(f"messages[{i}]: only text content parts are supported", "messages")
        parts.append(str(part.get("text", "")))
    return "\n".join(parts)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of generated text; a `</think>` without its opening tag (the
    template opened it) ends reasoning too."""
    if _THINK_CLOSE not in text:
        return None, text
    head, _, answer = text.partition(_THINK_CLOSE)
    head = head.lstrip()
    if head.startswith(_THINK_OPEN):
        head = head[len(_THINK_OPEN) :]
    elif _THINK_OPEN in head:
        return None, text
    return head.strip("\n") or None, answer.lstrip("\n")


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(content left, tool calls) of generated text, as the hermes parser reads it."""
    calls: list[dict[str, Any]] = []

    def take(match: re.Match[str]) -> str:
        try:
            obj = json.loads(match.group(1))
        except ValueError:
            return match.group(0)
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return match.group(0)
        args = obj.get("arguments", {})
        calls.append(
            {
                "id": f"chatcmpl-tool-{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": obj["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
        return ""

    content = _CALL.sub(take, text)
    return (content.strip() if calls else content), calls


def assistant_message(text: str, req: ChatRequest) -> tuple[dict[str, Any], bool]:
    """The response message of generated text, and whether it calls tools."""
    reasoning, answer = split_reasoning(text)
    calls: list[dict[str, Any]] = []
    if wants_tools(req):
        answer, calls = parse_tool_calls(answer)
    msg: dict[str, Any] = {"role": "assistant", "content": answer or (None if calls else "")}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    if calls:
        msg["tool_calls"] = calls
    return msg, bool(calls)
