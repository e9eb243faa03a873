"""`brightrun chat-set`: the playground's "Compare on a set" from the terminal: every prompt
of a set through the base model and/or an adapter, side by side, exported as JSONL.

    brightrun chat-set --adapter support-bot --base --prompts prompts.txt --out answers.jsonl
    brightrun chat-set --adapter support-bot --base --eval-split DATASET_ID

Prompts as the playground takes them: one per line, `prompt<TAB>reference`, or JSON lines
with prompt/reference (or messages); or a dataset's eval split.
"""

from __future__ import annotations

from pathlib import Path

import typer

from core.settings import load_settings


# long: every option of the command is a typer parameter
def chat_set(
    adapter: list[str] = typer.Option(
        [],
        "--adapter",
        "-a",
        help="adapter name (newest version), label ('bot v2') or served name; repeatable",
    ),
    version: int | None = typer.Option(
        None, "--version", "-v", help="adapter version number (with one --adapter)"
    ),
    base: bool = typer.Option(False, "--base", help="the base model answers too (or alone)"),
    prompts: Path | None = typer.Option(None, "--prompts", help="file of prompts (see above)"),
    eval_split: str = typer.Option(
        "", "--eval-split", help="use this dataset's eval split instead"
    ),
    system: str = typer.Option("", "--system", "-s", help="system prompt"),
    temperature: float | None = typer.Option(None, help="0 = greedy; default from BrightRun"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="answer length cap"),
    seed: int | None = typer.Option(None, help="sampling seed, for repeatable answers"),
    out: Path = typer.Option(
        Path("playground-set.jsonl"), "--out", help="where to write the answers (JSONL)"
    ),
) -> None:
    """Run a set of prompts through the base and/or an adapter and export the answers."""
    from cli.auth import acting_user
    from cli.chat import _sampling, chosen_adapters
    from core.clients import inference as inf
    from core.clients.storage import make_blob_store
    from core.db import session_scope
    from core.errors import BrightRunError

    if not adapter and not base:
        raise typer.BadParameter("give --adapter NAME, --base, or both")
    if (prompts is None) == (not eval_split):
        raise typer.BadParameter("give either --prompts FILE or --eval-split DATASET_ID")
    settings = load_settings()
    actor = acting_user(settings)
    try:
        if prompts is not None:
            cases = inf.parse_prompt_set(prompts.read_text())
        else:
            with session_scope(settings) as s:
                cases = inf.eval_split_cases(actor, s, make_blob_store(settings), eval_split)
        with inf.InferenceClient(settings) as client:
            choices = inf.actor_choices(actor, settings, client)
            targets = [choices[0]] if base else []
            for chosen in chosen_adapters(choices, adapter, version):
                client.ensure_adapter(chosen.served_name, chosen.path)
                targets.append(chosen)
            rows = inf.compare_on_set(
                client,
                cases,
                [c.served_name for c in targets],
                _sampling(temperature, None, max_tokens, seed, []),
                system,
                on_row=lambda i, _: typer.echo(f"{i + 1} of {len(cases)}", err=True),
            )
    except (BrightRunError, OSError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from e
    labels = {c.served_name: c.label for c in targets}
    for r in rows:
        typer.secho(f"── {r.prompt}", bold=True)
        if r.reference:
            typer.echo(f"   reference: {r.reference}")
        for served, answer in r.answers.items():
            typer.echo(f"   {labels[served]}: {answer}")
    out.write_text(inf.export_set_jsonl(rows, labels))
    typer.echo(f"wrote {len(rows)} rows to {out}")
