"""`brightrun agent`: the playground's Tools tab in the terminal. Chat with an adapter (or
the base) with OpenAI function schemas, see its tool calls as calls and its reasoning,
answer a call with its result and continue.

    brightrun agent --adapter weather-bot --tools tools.json "Weather in Oslo?"
    brightrun agent --adapter weather-bot --tools tools.json --temperature 0 "..."  # greedy
    brightrun agent --adapter weather-bot --dataset-tools ds-1 --conversation talk.jsonl "..."
    brightrun agent --adapter weather-bot --conversation talk.jsonl --result call_0='{"c": 3}'
    brightrun agent --conversation talk.jsonl --clear

With `--conversation FILE` the conversation (one message per line) is read, continued and
written back, so a tool result can be given in a later call; without it each call is one
turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from core.settings import load_settings


# long: every option of the command is a typer parameter
def agent(
    prompt: str = typer.Argument("", help="what to ask (may be empty when giving --result)"),
    adapter: str = typer.Option("", "--adapter", "-a", help="adapter name, label or served name"),
    version: int | None = typer.Option(None, "--version", "-v", help="adapter version number"),
    base: bool = typer.Option(False, "--base", help="ask the base model instead"),
    tools: Path | None = typer.Option(None, "--tools", help="JSON file of function schemas"),
    dataset_tools: str = typer.Option(
        "", "--dataset-tools", help="use the tools of this dataset's rows (dataset id)"
    ),
    conversation: Path | None = typer.Option(
        None, "--conversation", help="JSONL file the conversation is kept in between calls"
    ),
    result: list[str] = typer.Option(
        [], "--result", help="CALL_ID=TEXT: a tool's result for a call (repeatable)"
    ),
    thinking: bool | None = typer.Option(
        None, "--thinking/--no-thinking", help="Qwen3 templates: reason before answering"
    ),
    temperature: float | None = typer.Option(None, help="0 = greedy; default from BrightRun"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="answer length cap"),
    seed: int | None = typer.Option(None, help="sampling seed, for repeatable answers"),
    clear: bool = typer.Option(False, "--clear", help="empty the conversation file and stop"),
) -> None:
    """Chat with tools: tool calls are printed as calls, reasoning above the answer."""
    from core.errors import BrightRunError

    if clear:
        if conversation is None:
            raise typer.BadParameter("--clear needs --conversation FILE")
        conversation.write_text("")
        typer.echo(f"[cleared {conversation}]", err=True)
        return
    from cli.chat import _sampling

    try:
        sampling = _sampling(temperature, None, max_tokens, seed, [])
        reply = _turn(
            prompt,
            adapter,
            version,
            base,
            tools,
            dataset_tools,
            conversation,
            result,
            thinking,
            sampling,
        )
    except BrightRunError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from e
    _print(reply)


def _turn(
    prompt: str,
    adapter: str,
    version: int | None,
    base: bool,
    tools_file: Path | None,
    dataset_id: str,
    conversation: Path | None,
    results: list[str],
    thinking: bool | None,
    sampling: Any,
) -> Any:
    """Send the conversation plus this turn's prompt or tool results; keep the reply."""
    from cli.auth import acting_user
    from core.clients.inference import InferenceClient, actor_choices, find_choice
    from core.clients.inference.tools import agent_chat, parse_tools_json, tool_result
    from core.errors import InvalidInput

    settings = load_settings()
    actor = acting_user(settings)
    messages = _load(conversation)
    for item in results:
        call_id, sep, text = item.partition("=")
        if not sep or not call_id:
            raise InvalidInput(f"--result {item!r}: give CALL_ID=TEXT")
        messages.append(tool_result(call_id, text))
    if prompt.strip():
        messages.append({"role": "user", "content": prompt})
    if not messages or messages[-1]["role"] == "assistant":
        raise InvalidInput("nothing to send: give a prompt or a --result")
    schemas = parse_tools_json(tools_file.read_text()) if tools_file else []
    if dataset_id:
        schemas += _dataset_tools(actor, settings, dataset_id)
    with InferenceClient(settings) as client:
        choices = actor_choices(actor, settings, client)
        if not adapter and not base:
            raise InvalidInput("give --adapter NAME, or --base for the base model")
        target = choices[0] if base else find_choice(choices, adapter, version)
        if not base:
            client.ensure_adapter(target.served_name, target.path)
        reply = agent_chat(
            client,
            target.served_name,
            messages,
            tools=schemas,
            sampling=sampling,
            enable_thinking=thinking,
        )
    if conversation is not None:
        _save(conversation, [*messages, reply.as_message()])
    return reply


def _dataset_tools(actor: Any, settings: Any, dataset_id: str) -> list[dict[str, Any]]:
    from core.clients.inference.tools import dataset_tools
    from core.clients.storage import make_blob_store
    from core.db import session_scope

    with session_scope(settings) as s:
        return dataset_tools(actor, s, make_blob_store(settings), dataset_id)


def _load(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _save(path: Path, messages: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))


def _print(reply: Any) -> None:
    if reply.reasoning:
        typer.secho(f"[reasoning] {reply.reasoning}", dim=True)
    if reply.content.strip():
        typer.echo(reply.content)
    for call in reply.tool_calls:
        typer.echo(f"call {call.id}: {call.name}({call.arguments})")
