"""Chat with tools and reasoning: OpenAI `tools` out, `tool_calls` and reasoning back.

`agent_chat(client, model, messages, tools=..., enable_thinking=...)` sends the messages
as they are (assistant `tool_calls`, `tool` messages with `tool_call_id`, so a
conversation continues after a tool result), `tools` as OpenAI function schemas, and
`enable_thinking` as `chat_template_kwargs` (Qwen3 templates read it; other templates
ignore it). The answer is an `AgentReply`: its text, its tool calls (as the server parsed
them: vLLM with `--enable-auto-tool-choice --tool-call-parser hermes`, or the local
server) and its reasoning (the server's `reasoning_content`/`reasoning` field, else an
opening `<think>...</think>` of the text). `parse_tools_json` reads the schemas a user
pastes; `tool_result` builds the message that answers a call. Errors are the client's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.clients.inference.client import InferenceClient
from core.clients.inference.routing import InferenceRouter
from core.clients.inference.types import Sampling
from core.errors import InvalidInput

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI gives it

    def parsed_arguments(self) -> dict[str, Any] | None:
        """The arguments as an object, or None when they are not a JSON object."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class AgentReply:
    model: str
    content: str
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_message(self) -> dict[str, Any]:
        """The reply as the assistant message that continues the conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        return msg


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a text that opens with a <think> block."""
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN) or THINK_CLOSE not in stripped:
        return None, text
    inner, _, rest = stripped[len(THINK_OPEN) :].partition(THINK_CLOSE)
    return inner.strip("\n") or None, rest.lstrip("\n")


def holds_tool_call(text: str) -> bool:
    """Whether a plain-text answer holds a tool call as Qwen's template writes one
    (`<tool_call>...</tool_call>`, what the Tools tab's request turns into `tool_calls`)."""
    start = text.find("<tool_call>")
    return start >= 0 and text.find("</tool_call>", start) > start


def parse_tools_json(text: str) -> list[dict[str, Any]]:
    """Function schemas pasted as JSON (a list, or one schema; bare `{"name", ...}`
    schemas are wrapped as OpenAI tools). Raises `InvalidInput` saying what is wrong."""
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"tools: not valid JSON ({e.msg}, line {e.lineno})") from None
    items = value if isinstance(value, list) else [value]
    tools = []
    for i, t in enumerate(items):
        fn = t.get("function") if isinstance(t, dict) and "function" in t else t
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidInput(f"tools[{i}] must be a function schema with a 'name'")
        tools.append({"type": "function", "function": fn})
    return tools


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    """The `tool` message that answers call `call_id`."""
    if not content.strip():
        raise InvalidInput("paste the tool's result before continuing")
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def agent_chat(
    client: InferenceClient | InferenceRouter,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    sampling: Sampling | None = None,
    enable_thinking: bool | None = None,
) -> AgentReply:
    """One non-streamed chat completion with tools and reasoning (module docstring)."""
    extra = {"chat_template_kwargs": {"enable_thinking": enable_thinking}}
    r = client.chat_completion(
        model,
        messages,
        sampling,
        tools=tools,
        extra_body=extra if enable_thinking is not None else None,
    )
    return _reply(model, r)


def _reply(model: str, r: Any) -> AgentReply:
    choice = r.choices[0]
    msg = choice.message
    extra = msg.model_extra or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    content = msg.content or ""
    if not reasoning:
        reasoning, content = split_reasoning(content)
    calls = tuple(
        ToolCall(c.id or f"call_{i}", c.function.name, c.function.arguments or "")
        for i, c in enumerate(msg.tool_calls or [])
    )
    usage = r.usage
    return AgentReply(
        model=model,
        content=content,
        reasoning=reasoning,
        tool_calls=calls,
        finish_reason=choice.finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


def dataset_tools(actor: Any, session: Any, store: Any, dataset_id: str) -> list[dict[str, Any]]:
    """The function schemas of the first row of the actor's dataset that defines any (its
    first 200 rows are looked at); [] when none does. NotFound for another user's dataset."""
    from core import datasets

    rows = datasets.preview_rows(actor, session, store, dataset_id, n=200, max_chars=10_000)
    return next((list(r["tools"]) for r in rows if r.get("tools")), [])


def tool_datasets(actor: Any, session: Any) -> dict[str, str]:
    """The actor's datasets whose rows define tools ({name: dataset id}), as their
    inspection counted them (`stats["agent"]["rows_with_tools"]`)."""
    from core import datasets

    return {
        d.name: d.id
        for d in datasets.list_datasets(actor, session)
        if ((d.stats or {}).get("agent") or {}).get("rows_with_tools")
    }
