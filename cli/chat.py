"""`brightrun chat`: talk to an adapter (or the base) from the terminal, streamed.

brightrun chat --adapter support-bot "How do I reset my password?"
brightrun chat --adapter support-bot --version 1 --base "..."   # base answers too
brightrun chat --adapter support-bot --base --export talk.jsonl "..."   # also saved
brightrun chat --base -a "support-bot v1" -a "support-bot v2" "..."   # base, SFT and DPO
brightrun chat --list
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from core.settings import load_settings


# long: every option of the command is a typer parameter
def chat(
    prompt: str = typer.Argument("", help="what to ask; read from stdin when empty"),
    adapter: list[str] = typer.Option(
        [],
        "--adapter",
        "-a",
        help="adapter name (newest version), label ('bot v2') or served name; repeat it to "
        "compare versions side by side",
    ),
    version: int | None = typer.Option(
        None, "--version", "-v", help="adapter version number (with one --adapter)"
    ),
    base: bool = typer.Option(False, "--base", help="also ask the base model, side by side"),
    system: str = typer.Option("", "--system", "-s", help="system prompt"),
    temperature: float | None = typer.Option(None, help="0 = greedy; default from BrightRun"),
    top_p: float | None = typer.Option(None, "--top-p", help="nucleus sampling mass"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="answer length cap"),
    seed: int | None = typer.Option(None, help="sampling seed, for repeatable answers"),
    stop: list[str] = typer.Option([], "--stop", help="stop string (repeatable)"),
    list_models: bool = typer.Option(False, "--list", help="list what you can chat with"),
    export: Path | None = typer.Option(
        None, "--export", help="also write the conversation as JSONL (as the playground exports it)"
    ),
) -> None:
    """Chat with one of your adapters through the inference server (INFERENCE_URL),
    streaming the answer; with --base the base model answers the same prompt."""
    import sys

    from cli.auth import acting_user
    from core.clients.inference import InferenceRouter, actor_choices
    from core.errors import BrightRunError

    settings = load_settings()
    actor = acting_user(settings)
    try:
        with InferenceRouter(settings) as client:  # each model on its base's endpoint
            choices = actor_choices(actor, settings, client)
            if list_models:
                for c in choices:
                    typer.echo(f"{c.label}\t{c.name}")  # a member never reads a folder
                return
            if not adapter and not base:
                raise typer.BadParameter("give --adapter NAME, or --base for the base model")
            text = prompt or sys.stdin.read()
            if not text.strip():
                raise typer.BadParameter("the prompt is empty")
            sampling = _sampling(temperature, top_p, max_tokens, seed, stop)
            targets = []
            if base:
                targets.append(choices[0])
            for chosen in chosen_adapters(choices, adapter, version):
                got = client.ensure_adapter(chosen.served_name, chosen.path)
                detail = got.detail if actor.is_admin else got.summary  # no folder
                typer.echo(f"[{chosen.label}: {detail}]", err=True)
                targets.append(chosen)
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": text}
            ]
            answers = _answer(client, targets, messages, sampling)
        if export is not None:
            _export(export, system, text, answers, targets)
    except BrightRunError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from e


def chosen_adapters(choices: list[Any], names: list[str], version: int | None) -> list[Any]:
    """The choices `--adapter` names, in order (`--version` picks among one adapter's)."""
    from core.clients.inference import find_choice
    from core.errors import InvalidInput

    if version is not None and len(names) > 1:
        raise InvalidInput("--version goes with one --adapter; name versions as 'NAME vN'")
    return [find_choice(choices, name, version) for name in names]


def _export(
    path: Path, system: str, prompt: str, answers: dict[str, str], targets: list[Any]
) -> None:
    """The one-turn conversation as the playground exports it (JSONL, one line per model)."""
    from core.clients.inference import export_conversation_jsonl

    path.write_text(
        export_conversation_jsonl(
            system,
            [{"user": prompt, "answers": answers}],
            list(answers),
            {c.served_name: c.label for c in targets},
            {c.served_name: c.name for c in targets},
        )
    )
    typer.echo(f"[wrote {path}]", err=True)


def _sampling(
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    seed: int | None,
    stop: list[str],
) -> Any:
    """The options given on the command line over BrightRun's sampling defaults."""
    from dataclasses import asdict

    from core.clients.inference import Sampling

    defaults = asdict(Sampling())
    given = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
    return Sampling(
        **{k: (v if v is not None else defaults[k]) for k, v in given.items()},
        seed=seed,
        stop=tuple(stop),
    )


def _answer(
    client: Any, targets: list[Any], messages: list[dict[str, str]], sampling: Any
) -> dict[str, str]:
    """Stream each target's answer, one after the other, headed by its label when several;
    returns {served name: answer}."""
    answers: dict[str, str] = {}
    for c in targets:
        if len(targets) > 1:
            typer.secho(f"── {c.label} ──", bold=True)
        stream = client.stream_chat(c.served_name, messages, sampling)
        parts = []
        for piece in stream:
            parts.append(piece)
            typer.echo(piece, nl=False)
        typer.echo("")
        answers[c.served_name] = "".join(parts)
        if stream.finish_reason == "length":
            typer.echo(f"[stopped at --max-tokens {sampling.max_tokens}]", err=True)
    return answers
