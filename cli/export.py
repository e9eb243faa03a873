"""`brightrun export gguf VERSION [--quant Q4_K_M] [--adapter-only] [--plan-only]`: a
version as GGUF for llama.cpp and Ollama, with an Ollama Modelfile (`core.export.export_gguf`).

`--quant` is f16 (default), bf16, Q8_0 or Q4_K_M, of the base model with the adapter merged;
`--adapter-only` writes the adapter alone as a GGUF LoRA for the base model's GGUF. The
files are written in the controller and stored, or, for a base above GGUF_LOCAL_MAX_PARAMS,
by a job on the GPU endpoint (`--gpu`, `--budget` as for a merge): the command then prints
the job's stage and share done as they change until it ends (`--no-wait`: print the job id
and return; `brightrun export gguf-status JOB` shows it later). Either way it prints each file with its size and a signed
link, and with `--out DIR` also copies them there; an export written here prints its stages
(merging, writing, quantising) at every tenth as it goes. `--plan-only` prints the expected size
and where it would be written, or why the export would be refused, and stops. Errors come
back as one line, exit code 2 for bad input or a missing thing, 1 otherwise (a failed job
included).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from cli.common import fail as _fail

app = typer.Typer(help="Export a version in another format: gguf (llama.cpp, Ollama).")


def _plan(settings: object, actor: object, ref: str, quant: str, adapter_only: bool) -> None:
    from core.export import gguf_plans

    for plan in gguf_plans(actor, settings, ref):  # type: ignore[arg-type]
        if plan.adapter_only != adapter_only or (not adapter_only and plan.variant != quant):
            continue
        what = "adapter as a GGUF LoRA" if adapter_only else f"merged model, {quant}"
        where = "here" if plan.where == "controller" else "by a job on the GPU endpoint"
        split = f", in {plan.shards} files (split GGUF)" if plan.shards > 1 else ""
        typer.echo(
            f"{plan.model}: {what}, about {plan.expected_bytes / 1e6:.1f} MB, written {where}"
            + split
        )
        if plan.refusal:
            typer.echo(f"refused: {plan.refusal}")
        return
    _fail(ValueError(f"--quant {quant!r} is not one of f16, bf16, Q8_0, Q4_K_M"))


def _follow(settings: Any, actor: Any, job_id: str, store: Any, every_s: float) -> list[Any]:
    """Print the job's stage as it changes until it ends; its files, or exit 1 on failure."""
    from core.export import gguf_job_status

    last = ""
    while True:
        status = gguf_job_status(actor, settings, job_id, store=store)
        line = f"{status.status.lower()}: {status.stage}"
        if line != last:
            typer.echo(line)
            last = line
        if status.failure:
            typer.echo(f"error: job {job_id}: {status.failure}", err=True)
            raise typer.Exit(1)
        if status.done:
            return status.files
        time.sleep(every_s)


def _printer() -> Any:
    """An `on_progress` that prints each stage at every tenth of it."""
    shown: set[tuple[str, int]] = set()

    def show(stage: str, share: float) -> None:
        if (stage, int(share * 10)) not in shown:
            shown.add((stage, int(share * 10)))
            typer.echo(f"{stage}: {share:.0%}")

    return show


def _print_files(files: list[Any], store: Any, out: Path | None) -> None:
    for f in files:
        typer.echo(f"{f.name}\t{f.size} bytes\t{f.url}")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            store.download_to("adapters", f.key, out / f.name)
    if out is not None:
        typer.echo(f"copied {len(files)} files to {out}")


@app.command("gguf")
def gguf(
    ref: str = typer.Argument(..., help="version: id, NAME, NAME:v2"),
    quant: str = typer.Option("f16", "--quant", help="f16, bf16, Q8_0 or Q4_K_M"),
    adapter_only: bool = typer.Option(
        False, "--adapter-only", help="the adapter alone as a GGUF LoRA"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="also copy the files here"),
    plan_only: bool = typer.Option(False, "--plan-only", help="print the expected size only"),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="a job's export: print its id and return"
    ),
    gpu: str = typer.Option("", "--gpu", help="a job's GPU type id (default: GPU_TYPE)"),
    budget: float = typer.Option(
        0.0, "--budget", help="a job's dollar cap (default: JOB_BUDGET_USD)"
    ),
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
            actor,
            settings,
            ref,
            variant=quant,
            adapter_only=adapter_only,
            store=store,
            gpu_type=gpu or None,
            budget_usd=budget or None,
            on_progress=_printer(),
        )
        files = done.files
        if done.job_id:
            typer.echo(f"job {done.job_id}: the GPU endpoint writes {done.label} as GGUF")
            if no_wait:
                typer.echo(f"follow it with `brightrun export gguf-status {done.job_id}`")
                return
            files = _follow(settings, actor, done.job_id, store, settings.sync_interval_s)
    except BrightRunError as e:
        _fail(e)
    _print_files(files, store, out)


@app.command("gguf-status")
def gguf_status(
    job_id: str = typer.Argument(..., help="the GGUF export's job id"),
    out: Path | None = typer.Option(None, "--out", "-o", help="also copy the files here"),
    wait: bool = typer.Option(False, "--wait", help="follow the job until it ends"),
) -> None:
    """Where a GGUF export job is; its files with sizes and signed links once it completed."""
    from cli.auth import acting_user
    from core.clients.storage import make_blob_store
    from core.errors import BrightRunError
    from core.export import gguf_job_status
    from core.settings import load_settings

    settings = load_settings()
    actor = acting_user(settings)
    store = make_blob_store(settings)
    try:
        if wait:
            files = _follow(settings, actor, job_id, store, settings.sync_interval_s)
        else:
            status = gguf_job_status(actor, settings, job_id, store=store)
            typer.echo(f"{status.status.lower()}: {status.stage}")
            if status.failure:
                typer.echo(f"error: {status.failure}", err=True)
                raise typer.Exit(1)
            files = status.files
    except BrightRunError as e:
        _fail(e)
    _print_files(files, store, out)
