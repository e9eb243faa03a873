"""`brightrun export gguf VERSION [--quant Q4_K_M] [--adapter-only] [--plan-only]`: a
version as GGUF for llama.cpp and Ollama, with an Ollama Modelfile (`core.export.export_gguf`).

`--quant` is f16 (default), bf16, Q8_0 or Q4_K_M, of the base model with the adapter merged;
`--adapter-only` writes the adapter alone as a GGUF LoRA for the base model's GGUF. The
files are written in the controller and stored; the command prints each with its size and
a signed link, and with `--out DIR` also copies them there. `--plan-only` prints the
expected size, or why the export would be refused, and stops. Errors come back as one
line, exit code 2 for bad input or a missing thing, 1 otherwise.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Export a version in another format: gguf (llama.cpp, Ollama).")


def _fail(e: Exception) -> None:
    from core.errors import InvalidInput, NotFound

    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2 if isinstance(e, InvalidInput | NotFound) else 1)


def _plan(settings: object, actor: object, ref: str, quant: str, adapter_only: bool) -> None:
    from core.export import gguf_plans

    for plan in gguf_plans(actor, settings, ref):  # type: ignore[arg-type]
        if plan.adapter_only != adapter_only or (not adapter_only and plan.variant != quant):
            continue
        what = "adapter as a GGUF LoRA" if adapter_only else f"merged model, {quant}"
        typer.echo(f"{plan.model}: {what}, about {plan.expected_bytes / 1e6:.1f} MB")
        if plan.refusal:
            typer.echo(f"refused: {plan.refusal}")
        return
    _fail(ValueError(f"--quant {quant!r} is not one of f16, bf16, Q8_0, Q4_K_M"))


@app.command("gguf")
def gguf(
    ref: str = typer.Argument(..., help="version: id, NAME, NAME:v2"),
    quant: str = typer.Option("f16", "--quant", help="f16, bf16, Q8_0 or Q4_K_M"),
    adapter_only: bool = typer.Option(
        False, "--adapter-only", help="the adapter alone as a GGUF LoRA"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="also copy the files here"),
    plan_only: bool = typer.Option(False, "--plan-only", help="print the expected size only"),
) -> None:
    """Write a version as GGUF with an Ollama Modelfile; store them and print signed links."""
    from cli.auth import acting_user
    from core.clients.storage import make_blob_store
    from core.errors import BrightRunError
    from core.export import export_gguf
    from core.settings import load_settings

    settings = load_settings()
    actor = acting_user(settings)
    store = make_blob_store(settings)
    try:
        if plan_only:
            _plan(settings, actor, ref, quant, adapter_only)
            return
        done = export_gguf(
            actor, settings, ref, variant=quant, adapter_only=adapter_only, store=store
        )
    except BrightRunError as e:
        _fail(e)
    for f in done.files:
        typer.echo(f"{f.name}\t{f.size} bytes\t{f.url}")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            store.download_to("adapters", f.key, out / f.name)
    if out is not None:
        typer.echo(f"copied {len(done.files)} files to {out}")
