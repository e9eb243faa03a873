"""`brightrun train`, `brightrun jobs ...` and `brightrun sync`: launch and follow jobs.

    brightrun train --dataset ID --model M [--preset P] [settings] [--budget USD] [--wait]
    brightrun jobs list | show ID | cancel ID | retry ID | events ID
    brightrun jobs compare ID ID ... | relaunch ID   (cli/runs.py)
    brightrun sync [--once]

Errors come back as one line naming what is wrong, exit code 1 (2 for bad input).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from trainer.shared.methods import METHODS, SETTINGS, Method, info

METHOD_HELP = "; ".join(f"{m}: {i.help}" for m, i in METHODS.items() if i.trains)


def setting_help(name: str) -> str:
    """A method setting's help for its option, with the methods that read it and its default."""
    users = "/".join(
        m.upper() for m, i in METHODS.items() if name in i.settings + i.grading_settings
    )
    s = SETTINGS[name]
    return f"{users}: {s.help} (default {s.default})"


app = typer.Typer(help="Training jobs: list, show, cancel, retry, and their event history.")


def _settings() -> Any:
    from core.settings import load_settings

    return load_settings()


def _actor(settings: Any) -> Any:
    from cli.auth import acting_user

    return acting_user(settings)  # the local user, or who `brightrun login` signed in


def _fail(e: Exception) -> None:
    from core.errors import InvalidInput, NotFound

    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2 if isinstance(e, InvalidInput | NotFound) else 1)


def _errors() -> tuple[type[Exception], ...]:
    from core.clients.runpod import RunPodError
    from core.errors import BrightRunError

    return (BrightRunError, RunPodError)


def _money(x: float | None) -> str:
    return f"${(x or 0.0):.4f}" if (x or 0.0) < 1 else f"${x:.2f}"


def job_summary(job: Any) -> dict[str, Any]:
    """The fields `jobs show --json` prints (no spec URLs, no secrets)."""
    from core.jobs import live_cost_usd

    keys = (
        "id",
        "status",
        "base_model",
        "adapter_name",
        "dataset_id",
        "gpu_type",
        "price_tier",
        "rate_per_s",
        "budget_usd",
        "step",
        "total_steps",
        "progress",
        "eta_s",
        "final_loss",
        "eval_loss",
        "delay_ms",
        "execution_ms",
        "billed_s",
        "attempt",
        "stop_reason",
        "failure_kind",
        "failure_message",
        "failure_suggestion",
        "runpod_job_id",
        "parent_job_id",
    )
    out = {k: getattr(job, k) for k in keys}
    out["cost_usd"] = round(live_cost_usd(job), 6)
    early = (job.result or {}).get("early_stopping")
    if early:
        out["early_stopping"] = early
    for k in ("created_at", "started_at", "finished_at"):
        v = getattr(job, k)
        out[k] = v.isoformat() if v else None
    return out


def _stop_note(job: Any) -> str | None:
    """Why the job stopped before its last step, as the job page says it."""
    from core.queries import stop_note

    return stop_note(job.stop_reason, (job.result or {}).get("early_stopping"), job.step)


# --------------------------------------------------------------------------- train


# long: every option of the command is a typer parameter
def train(
    dataset: str = typer.Option(..., "--dataset", help="dataset id (see `brightrun dataset list`)"),
    model: str = typer.Option(
        ..., "--model", help="base model: catalog id, hub id or model folder"
    ),
    adapter_name: str = typer.Option(
        "", "--adapter-name", help="adapter name (default: model-dataset)"
    ),
    preset: str = typer.Option(
        "", "--preset", help="start from a Train page preset: Quick try | Balanced | Thorough"
    ),
    quant: str | None = typer.Option(None, "--quant", help="nf4 | int8 | none (default: nf4)"),
    lora_r: int | None = typer.Option(None, "--lora-r", help="LoRA rank"),
    lora_alpha: float | None = typer.Option(None, "--lora-alpha", help="LoRA alpha"),
    lora_dropout: float | None = typer.Option(None, "--lora-dropout", help="LoRA dropout"),
    target_modules: str = typer.Option(
        "", "--target-modules", help="comma-separated, e.g. q_proj,v_proj (default: all-linear)"
    ),
    lora_on_experts: bool | None = typer.Option(
        None, "--lora-on-experts/--no-lora-on-experts", help="MoE: also adapt the routed experts"
    ),
    epochs: float | None = typer.Option(None, "--epochs", help="passes over the data"),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="optimizer steps (instead of epochs)"
    ),
    lr: float | None = typer.Option(None, "--lr", help="learning rate"),
    micro_batch: int | None = typer.Option(None, "--micro-batch", help="rows per micro-batch"),
    grad_accum: int | None = typer.Option(
        None, "--grad-accum", help="micro-batches per optimizer step"
    ),
    max_length: int | None = typer.Option(
        None,
        "--max-length",
        help="tokens per row (longer chat rows are cut, longer text documents split into windows)",
    ),
    eval_fraction: float | None = typer.Option(
        None,
        "--eval-fraction",
        help="rows held out for eval when the dataset has no eval split (default 0, or the preset's)",
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="cosine | linear | constant | constant_with_warmup"
    ),
    warmup: float | None = typer.Option(
        None, "--warmup", help="share of the steps spent warming up the learning rate"
    ),
    packing: bool | None = typer.Option(
        None, "--packing/--no-packing", help="pack rows into full sequences"
    ),
    grad_ckpt: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="trade compute for memory",
    ),
    eval_every: int | None = typer.Option(
        None, "--eval-every", help="optimizer steps between evaluations (default: 0, at the end)"
    ),
    es_patience: int | None = typer.Option(
        None,
        "--early-stopping-patience",
        help="stop once the eval loss has not improved for this many evaluations in a row, "
        "keeping the best weights as the adapter (needs --eval-every and an eval split; "
        "default: off)",
    ),
    es_min_delta: float | None = typer.Option(
        None,
        "--early-stopping-min-delta",
        help="how much lower an eval loss must be to count as an improvement (default: 0)",
    ),
    reasoning: bool | None = typer.Option(
        None,
        "--train-on-reasoning/--no-train-on-reasoning",
        help="reasoning (<think> blocks) carries loss like the answer (default: on)",
    ),
    gpu: str = typer.Option("", "--gpu", help="GPU type id (default: GPU_TYPE)"),
    gpus: int = typer.Option(
        1,
        "--gpus",
        help="GPUs to train on, 1-8 (billed for each; `brightrun plan` says how many fit)",
    ),
    budget: float = typer.Option(
        0.0, "--budget", help="dollar cap for this job (default: JOB_BUDGET_USD)"
    ),
    wait: bool = typer.Option(
        False, "--wait", help="follow the job with a live progress bar until it ends"
    ),
    method: Method = typer.Option(Method.SFT, "--method", help=METHOD_HELP),
    beta: float | None = typer.Option(None, "--beta", help=setting_help("beta")),
    loss_type: str | None = typer.Option(None, "--loss-type", help=setting_help("loss_type")),
    orpo_lambda: float | None = typer.Option(
        None, "--orpo-lambda", help=setting_help("orpo_lambda")
    ),
    desirable_weight: float | None = typer.Option(
        None, "--desirable-weight", help=setting_help("desirable_weight")
    ),
    undesirable_weight: float | None = typer.Option(
        None, "--undesirable-weight", help=setting_help("undesirable_weight")
    ),
    graders: Path | None = typer.Option(
        None, "--graders", help="GRPO: a JSON file of graders (one, or a list; OpenAI's format)"
    ),
    generations: int | None = typer.Option(
        None, "--num-generations", help=setting_help("num_generations")
    ),
    completion_length: int | None = typer.Option(
        None, "--max-completion-length", help=setting_help("max_completion_length")
    ),
) -> None:
    """Launch a LoRA/QLoRA training job on the GPU endpoint. Settings left out take the
    preset's values (`--preset`, as on the Train page), else the job spec's defaults. It is
    refused, with every reason, when it cannot fit the GPU, would cost more than its budget,
    or would exceed your quotas."""
    from core import jobs

    settings = _settings()
    actor = _actor(settings)
    modules = [m.strip() for m in target_modules.split(",") if m.strip()] or None
    try:
        early = early_stopping_setting(es_patience, es_min_delta)
        job = _launch(
            actor,
            settings,
            preset,
            dict(
                model=model,
                dataset_id=dataset,
                adapter_name=adapter_name or None,
                quantization=quant,
                eval_fraction=eval_fraction,
                gpu_type=gpu or None,
                gpus=gpus,
                budget_usd=budget or None,
                lora={
                    "r": lora_r,
                    "alpha": lora_alpha,
                    "dropout": lora_dropout,
                    "target_modules": modules,
                    "lora_on_experts": lora_on_experts,
                },
                training={
                    "learning_rate": lr,
                    "micro_batch_size": micro_batch,
                    "grad_accum": grad_accum,
                    "max_length": max_length,
                    "epochs": epochs,
                    "max_steps": max_steps,
                    "lr_scheduler": scheduler,
                    "warmup_ratio": warmup,
                    "packing": packing,
                    "gradient_checkpointing": grad_ckpt,
                    "eval_every": eval_every,
                    "early_stopping": early,
                    "train_on_reasoning": reasoning,
                },
                method=method,
                preference={
                    "beta": beta,
                    "loss_type": loss_type,
                    "orpo_lambda": orpo_lambda,
                    "desirable_weight": desirable_weight,
                    "undesirable_weight": undesirable_weight,
                },
                grading=grpo_setting(graders, generations, completion_length),
            ),
        )
    except _errors() as e:
        _fail(e)
    pricing = jobs.pricing_for(settings, gpu or None, gpus)
    typer.echo(f"job {job.id} {job.status}: {pricing.note}; budget {_money(job.budget_usd)}")
    if wait:
        raise typer.Exit(follow(actor, settings, job.id))


def grpo_setting(graders: Path | None, generations: int | None, length: int | None) -> Any:
    """`grpo` from the GRPO flags (None when no graders file is given); `InvalidInput` for a
    file that is not JSON, or GRPO flags without graders."""
    from core.errors import InvalidInput

    if graders is None:
        if generations is not None or length is not None:
            raise InvalidInput("--num-generations and --max-completion-length need --graders")
        return None
    try:
        given = json.loads(graders.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInput(f"--graders {graders}: not a readable JSON file ({e})") from None
    out: dict[str, Any] = {"graders": given if isinstance(given, list) else [given]}
    if generations is not None:
        out["num_generations"] = generations
    if length is not None:
        out["max_completion_length"] = length
    return out


def early_stopping_setting(patience: int | None, min_delta: float | None) -> Any:
    """`training.early_stopping` from the two flags (None: off); `InvalidInput` for a
    minimum improvement given without a patience."""
    from core.errors import InvalidInput

    if patience is None:
        if min_delta is not None:
            raise InvalidInput(
                "--early-stopping-min-delta needs --early-stopping-patience (evaluations "
                "without improvement before stopping)"
            )
        return None
    return {"patience": patience, **({"min_delta": min_delta} if min_delta is not None else {})}


def _launch(actor: Any, settings: Any, preset: str, given: dict[str, Any]) -> Any:
    """Build the request (the preset's values under what was given), show every reason
    the preflight blocks it, and submit it."""
    from core import jobs
    from core.db import session_scope
    from core.errors import InvalidInput

    base = jobs.preset(preset) if preset else {"lora": {}, "training": {}}
    method = info(given.get("method") or Method.SFT)
    if not method.trains:
        raise InvalidInput(method.not_trained)
    stray = [k for k, v in (given.get("preference") or {}).items() if v is not None]
    stray = [k for k in stray if k not in method.settings]
    if stray:
        raise InvalidInput(
            f"method {method.method} takes no {', '.join(stray)} "
            f"(it takes: {', '.join(method.settings) or 'no method settings'})"
        )
    extra = jobs.METHOD_PRESETS[method.method]
    base["training"] = {**base["training"], **extra.get("training", {})}
    base["preference"] = extra.get("preference")
    given.setdefault("preference", None)
    for part in ("lora", "training", "preference"):
        mine = {k: v for k, v in (given[part] or {}).items() if v is not None}
        given[part] = {**(base[part] or {}), **mine}
    if not method.settings:
        given["preference"] = None
    for key in ("quantization", "eval_fraction"):
        if given[key] is None:
            given[key] = base.get(key, jobs.defaults()[key])
    request = jobs.LaunchRequest.build(**given)
    with session_scope(settings) as s:
        pre = jobs.preflight(request, actor, s, settings)
    for problem in pre.problems[1:]:
        typer.echo(f"also: {problem}", err=True)
    pre.raise_first()
    return jobs.submit(actor, settings, request)


def follow(actor: Any, settings: Any, job_id: str, every_s: float = 2.0) -> int:
    """Sync the job until it ends, drawing a progress bar with loss and dollars. Returns the
    exit code: 0 when it completed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from core import jobs
    from core.db.tables import TERMINAL_STATUSES, JobStatus

    columns = (
        TextColumn("{task.fields[status]:<11}"),
        BarColumn(),
        TextColumn("step {task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[cost]}"),
        TextColumn("eta {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(
            job_id, total=None, status=JobStatus.QUEUED, steps="-", loss="-", cost="$0", eta="-"
        )
        while True:
            try:
                job = jobs.sync(actor, settings, job_id)
            except _errors() as e:
                bar.console.print(f"[yellow]sync: {e}; trying again")
                time.sleep(every_s)
                continue
            bar.update(
                task,
                total=job.total_steps or None,
                completed=job.step or 0,
                status=job.status,
                steps=f"{job.step or 0}/{job.total_steps or '?'}",
                loss=f"{job.final_loss:.4f}" if job.final_loss is not None else "-",
                cost=_money(jobs.live_cost_usd(job)),
                eta=jobs.eta_text(job),
            )
            if job.status in TERMINAL_STATUSES:
                break
            time.sleep(every_s)
    _print_outcome(job)
    return 0 if job.status == JobStatus.COMPLETED else 1


def _print_outcome(job: Any) -> None:
    from core.db.tables import JobStatus

    line = f"job {job.id} {job.status}: {job.step or 0} steps, cost {_money(job.cost_usd)}"
    if job.final_loss is not None:
        line += f", final loss {job.final_loss:.4f}"
    if job.eval_loss is not None:
        line += f", eval loss {job.eval_loss:.4f}"
    if job.stop_reason and job.stop_reason != "finished":
        line += f" (stopped: {job.stop_reason})"
    typer.echo(line)
    note = _stop_note(job)
    if note:
        typer.echo(note)
    if job.failure_message:
        typer.echo(f"{job.failure_kind}: {job.failure_message}")
        if job.failure_suggestion:
            typer.echo(f"suggestion: {job.failure_suggestion}")
    if job.status == JobStatus.COMPLETED and job.adapter_name:
        typer.echo(f"adapter: {job.adapter_name}")


# --------------------------------------------------------------------------- jobs


@app.command("list")
def list_(
    status: list[str] = typer.Option([], "--status", help="only these statuses (repeatable)"),
    limit: int = typer.Option(50, "--limit", help="at most this many, newest first"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List your jobs, newest first."""
    from core import jobs

    settings = _settings()
    rows = jobs.list_jobs(_actor(settings), settings, statuses=status or None, limit=limit)
    if as_json:
        typer.echo(json.dumps([job_summary(j) for j in rows], indent=1))
        return
    if not rows:
        typer.echo("no jobs yet: `brightrun train --help`")
        return
    for j in rows:
        steps = f"{j.step or 0}/{j.total_steps or '?'}"
        loss = f"{j.final_loss:.4f}" if j.final_loss is not None else "-"
        typer.echo(
            f"{j.id}  {j.status:<11} {j.created_at:%Y-%m-%d %H:%M}  {steps:>11}  loss {loss:<8} "
            f"{_money(jobs.live_cost_usd(j)):>9}  {j.adapter_name or j.base_model}"
        )


@app.command()
def show(
    job_id: str = typer.Argument(..., help="job id"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    sync: bool = typer.Option(True, help="bring the job up to date with the endpoint first"),
) -> None:
    """Show one job: status, progress, losses, cost, and why it failed if it did."""
    from core import jobs

    settings = _settings()
    actor = _actor(settings)
    try:
        job = jobs.sync(actor, settings, job_id) if sync else jobs.get(actor, settings, job_id)
    except _errors() as e:
        _fail(e)
    info = job_summary(job)
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    for k, v in info.items():
        if v is not None:
            typer.echo(f"{k:>18}: {v}")
    note = _stop_note(job)
    if note:
        typer.echo(f"{'stopped':>18}: {note}")
    if job.gpu_type == "LOCAL_CPU":
        typer.echo(f"{'note':>18}: ran on this machine's CPU, priced at the configured GPU's rate")


@app.command()
def cancel(job_id: str = typer.Argument(..., help="job id")) -> None:
    """Stop a queued or running job. Its checkpoints stay, so a retry continues from them."""
    from core import jobs

    settings = _settings()
    try:
        job = jobs.cancel(_actor(settings), settings, job_id)
    except _errors() as e:
        _fail(e)
    typer.echo(f"job {job.id} {job.status}; cost so far {_money(job.cost_usd)}")


@app.command()
def retry(
    job_id: str = typer.Argument(..., help="job id"),
    budget: float = typer.Option(
        0.0, "--budget", help="new total budget in dollars (default: what is left)"
    ),
    wait: bool = typer.Option(False, "--wait", help="follow the job until it ends"),
) -> None:
    """Run a failed, cancelled or timed-out job again; it resumes from its last checkpoint."""
    from core import jobs

    settings = _settings()
    actor = _actor(settings)
    try:
        job = jobs.retry(actor, settings, job_id, budget_usd=budget or None)
    except _errors() as e:
        _fail(e)
    typer.echo(f"job {job.id} {job.status} (attempt {job.attempt + 1})")
    if wait:
        raise typer.Exit(follow(actor, settings, job.id))


@app.command()
def events(
    job_id: str = typer.Argument(..., help="job id"),
    type_: list[str] = typer.Option([], "--type", help="only these event types (repeatable)"),
    after: int = typer.Option(-1, "--after", help="only events with a larger sequence number"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Print a job's stored events (started, metrics, checkpoint, completed, failed) in order."""
    from core import jobs

    settings = _settings()
    try:
        rows = jobs.events(_actor(settings), settings, job_id, after_seq=after, types=type_ or None)
    except _errors() as e:
        _fail(e)
    for e in rows:
        if as_json:
            typer.echo(json.dumps({"seq": e.seq, "type": e.type, "ts": e.ts, "data": e.data}))
        elif e.type == "metrics":
            d = e.data
            extra = f" eval {d['eval_loss']:.4f}" if d.get("eval_loss") is not None else ""
            typer.echo(f"{e.seq:>6} metrics   step {d.get('step')} loss {d.get('loss')}{extra}")
        else:
            summary = {k: v for k, v in (e.data or {}).items() if not isinstance(v, dict | list)}
            typer.echo(f"{e.seq:>6} {e.type:<9} {json.dumps(summary)[:200]}")


# --------------------------------------------------------------------------- sync


def sync_command(
    once: bool = typer.Option(False, "--once", help="one pass over the unfinished jobs, then exit"),
    interval: float = typer.Option(
        0.0, "--interval", help="seconds between passes (default: SYNC_INTERVAL_S)"
    ),
) -> None:
    """Keep every unfinished job in step with the endpoint (the background syncer that
    `brightrun up` starts; runnable as a service). Backfills from storage when the endpoint
    has forgotten a job, and posts end-of-job notifications."""
    import logging

    from core import syncer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs request URLs at INFO
    settings = _settings()

    def report_line(r: Any) -> None:
        typer.echo(f"synced {r.synced}, ended {r.ended}, errors {len(r.errors)}")

    try:
        syncer.run(
            settings,
            interval_s=interval or None,
            passes=1 if once else None,
            on_pass=report_line if once else None,
        )
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
