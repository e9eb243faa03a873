"""`brightrun adapters ...` and `brightrun cache-model`: versions, lineage, evaluation,
export, the Hub, continued training and merges.

    brightrun adapters list | versions NAME | show REF
    brightrun adapters promote REF | delete NAME|REF --yes
    brightrun adapters eval REF [--judge] | continue REF [--dataset ID] [--epochs N] ...
    brightrun adapters export REF [--out FILE] | push REF --repo ORG/NAME [--public] [--own-token]
    brightrun adapters merge REF [--dtype bfloat16] [--hub-repo ORG/NAME] [--plan-only]
    brightrun cache-model MODEL [--quantized-copy]

REF is a version id (`av-...`), an adapter name (its newest version), `NAME:v2`, `NAME@2`
or `NAME v2`. Errors come back as one line, exit code 2 for bad input or a missing thing,
1 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cli.common import errors as _errors
from cli.common import fail as _fail
from trainer.shared.methods import METHODS

app = typer.Typer(
    help="Adapter versions: list, show, promote, evaluate, continue, export, push, merge, delete."
)


def _ctx() -> tuple[Any, Any]:
    from cli.auth import acting_user
    from core.settings import load_settings

    settings = load_settings()
    return settings, acting_user(settings)


def _loss(x: float | None) -> str:
    return f"{x:.4f}" if x is not None else "-"


def _print_versions(rows: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "version", "id", "base model", "method", "parent", "final loss", "eval", "stored", "volume"
    )
    for r in rows:
        table.add_row(
            r.label,
            r.id,
            r.base_model,
            r.method,
            r.parent_label or "-",
            _loss(r.final_loss),
            r.eval_status or "-",
            "yes" if r.stored else "no",
            "yes" if r.on_volume else "no",
        )
    Console().print(table)


@app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Your adapters with their newest version (checkpoints left out)."""
    from core import adapters
    from core.db import session_scope

    settings, actor = _ctx()
    try:
        with session_scope(settings) as s:
            rows = adapters.list_versions(actor, s, include_checkpoints=False)
    except _errors() as e:
        _fail(e)
    newest: dict[str, Any] = {}
    for r in rows:
        newest[r.adapter] = r
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in newest.values()], indent=1))
        return
    if not newest:
        typer.echo("no adapters yet: an adapter appears when a training job completes")
        return
    _print_versions(list(newest.values()))


@app.command("versions")
def versions(
    name: str = typer.Argument(..., help="adapter name"),
    checkpoints: bool = typer.Option(True, help="include checkpoints"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Every version of one adapter (v1, v2, ...) and its checkpoints, with lineage."""
    from core import adapters
    from core.db import session_scope

    settings, actor = _ctx()
    try:
        with session_scope(settings) as s:
            rows = adapters.list_versions(actor, s, name, include_checkpoints=checkpoints)
    except _errors() as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=1))
    else:
        _print_versions(rows)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="version: id, NAME, NAME:v2"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """One version: where it came from, its lineage, losses and evaluation."""
    from core import adapters, evaluate
    from core.db import session_scope

    settings, actor = _ctx()
    try:
        with session_scope(settings) as s:
            chain = adapters.lineage(actor, s, ref)
            rep = evaluate.report(actor, s, chain[0].id)
    except _errors() as e:
        _fail(e)
    me = chain[0]
    if as_json:
        typer.echo(
            json.dumps(
                {**me.to_dict(), "lineage": [c.label for c in chain[1:]], "evaluation": rep},
                indent=1,
                default=str,
            )
        )
        return
    typer.echo(f"{me.label} ({me.id}) on {me.base_model}")
    typer.echo(
        f"  job {me.job_id or '-'}, dataset {me.dataset_id or '-'}; final loss {_loss(me.final_loss)}, "
        f"eval loss {_loss(me.eval_loss)}"
    )
    if len(chain) > 1:
        typer.echo("  lineage: " + " <- ".join(c.label for c in chain))
    if rep and rep.get("status") == "done":
        from core.evaluate import METRIC_LABELS, METRICS

        typer.echo(f"  evaluation on {rep['rows']} eval rows (adapter / base):")
        for m in rep.get("metrics") or METRICS:
            label = METRIC_LABELS.get(m, m.replace("_", " "))
            typer.echo(f"    {label:<12} {rep['adapter'][m]:.3f} / {rep['base'][m]:.3f}")
        if rep.get("judge"):
            typer.echo(f"    LLM judge win rate {rep['judge']['win_rate']}")
    elif rep:
        typer.echo(
            f"  evaluation {rep.get('status')}: {rep.get('reason') or rep.get('error') or ''}"
        )


@app.command("promote")
def promote(
    ref: str = typer.Argument(..., help="checkpoint version id (see `versions NAME`)"),
) -> None:
    """Make a checkpoint the adapter's next numbered version."""
    from core import adapters
    from core.clients.storage import make_blob_store
    from core.db import session_scope

    settings, actor = _ctx()
    try:
        with session_scope(settings) as s:
            v = adapters.promote(actor, s, make_blob_store(settings), ref)
            label = adapters.info(actor, s, v).label
    except _errors() as e:
        _fail(e)
    typer.echo(f"promoted: {label}")


@app.command("delete")
def delete(
    ref: str = typer.Argument(..., help="adapter name (all versions) or one version (NAME:v2, id)"),
    yes: bool = typer.Option(False, "--yes", help="do not ask"),
) -> None:
    """Delete an adapter with all its versions, or one version, and their stored files.
    Version numbers are never reused."""
    from core import adapters
    from core.clients.storage import make_blob_store
    from core.db import session_scope

    settings, actor = _ctx()
    one = ref.startswith("av-") or bool(adapters._REF.match(ref))
    if not yes:
        typer.confirm(
            f"delete {'version' if one else 'adapter'} {ref}{'' if one else ' and all its versions'}?",
            abort=True,
        )
    try:
        with session_scope(settings) as s:
            if one:
                adapters.delete_version(actor, s, make_blob_store(settings), ref)
            else:
                adapters.delete_adapter(actor, s, make_blob_store(settings), ref)
    except _errors() as e:
        _fail(e)
    typer.echo(f"deleted {ref}")


@app.command("eval")
def eval_command(
    ref: str = typer.Argument(..., help="version: id, NAME, NAME:v2"),
    judge: bool | None = typer.Option(
        None, "--judge/--no-judge", help="LLM judge win rate (default: EVAL_JUDGE)"
    ),
    rows: int | None = typer.Option(None, "--rows", help="eval rows (default: EVAL_MAX_ROWS)"),
) -> None:
    """Evaluate a version now on its dataset's eval split, adapter against base, through
    the inference server (exact match, token F1, ROUGE-L; optionally an LLM judge)."""
    from core import adapters, evaluate
    from core.db import session_scope

    settings, actor = _ctx()
    try:
        with session_scope(settings) as s:
            vid = adapters.resolve(actor, s, ref).id
        rep = evaluate.evaluate_version(actor, settings, vid, max_rows=rows, use_judge=judge)
    except _errors() as e:
        _fail(e)
    for m in rep.get("metrics") or evaluate.METRICS:
        label = evaluate.METRIC_LABELS.get(m, m.replace("_", " "))
        typer.echo(f"{label:<12} adapter {rep['adapter'][m]:.3f}  base {rep['base'][m]:.3f}")
    for name, reason in (rep.get("skipped") or {}).items():
        typer.echo(f"grader {name} left out: {reason}")
    if rep.get("judge"):
        typer.echo(f"LLM judge ({rep['judge']['model']}) win rate {rep['judge']['win_rate']}")


@app.command("continue")
def continue_command(
    ref: str = typer.Argument(..., help="version to continue: id, NAME, NAME:v2"),
    dataset: str = typer.Option("", "--dataset", help="dataset id (default: the parent's)"),
    epochs: float | None = typer.Option(None, "--epochs", help="passes over the data"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="optimizer steps"),
    lr: float | None = typer.Option(None, "--lr", help="learning rate"),
    adapter_name: str = typer.Option(
        "", "--adapter-name", help="name of the result (default: the parent's)"
    ),
    budget: float = typer.Option(0.0, "--budget", help="dollar cap (default: JOB_BUDGET_USD)"),
    gpu: str = typer.Option("", "--gpu", help="GPU type id (default: GPU_TYPE)"),
    method: str = typer.Option(
        "",
        "--method",
        help=" | ".join(m for m, i in METHODS.items() if i.trains)
        + " (default: the parent's; with a reference pass, the version is the reference)",
    ),
) -> None:
    """Continue training a version (new data, more epochs): a job that starts from its
    weights, with its LoRA settings; the result is recorded with it as parent."""
    from core import jobs

    settings, actor = _ctx()
    training: dict[str, Any] = {}
    if lr is not None:
        training["learning_rate"] = lr
    if epochs is not None:  # epochs replace the parent's step count
        training.update(epochs=epochs, max_steps=None)
    if max_steps is not None:
        training["max_steps"] = max_steps
    try:
        job = jobs.continue_training(
            actor,
            settings,
            ref,
            dataset_id=dataset or None,
            training=training,
            adapter_name=adapter_name or None,
            budget_usd=budget or None,
            gpu_type=gpu or None,
            method=method or None,
        )
    except _errors() as e:
        _fail(e)
    typer.echo(
        f"job {job.id} {job.status}: continues {ref}; follow it with `brightrun jobs show {job.id}`"
    )


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="version: id, NAME, NAME:v2"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="zip file to write (default: ./<label>.zip)"
    ),
) -> None:
    """Download a version as a zip: PEFT files, brightrun.json and a model card."""
    from core import export as ex
    from core.clients.storage import make_blob_store
    from core.db import session_scope

    settings, actor = _ctx()
    try:
        with session_scope(settings) as s:
            name, data = ex.export_zip(actor, s, make_blob_store(settings), ref)
    except _errors() as e:
        _fail(e)
    path = out or Path(name)
    path.write_bytes(data)
    typer.echo(f"wrote {path} ({len(data)} bytes)")


@app.command("push")
def push(
    ref: str = typer.Argument(..., help="version: id, NAME, NAME:v2"),
    repo_id: str = typer.Option(..., "--repo", help="Hub model repo, e.g. your-name/support-bot"),
    public: bool = typer.Option(False, "--public", help="create the repo public (default private)"),
    own_token: bool = typer.Option(
        False,
        "--own-token",
        help="push with your own Hugging Face token (HF_USER_TOKEN, else asked for, hidden) "
        "instead of the deployment's HF_TOKEN",
    ),
    user_token: str = typer.Option("", envvar="HF_USER_TOKEN", hidden=True),
) -> None:
    """Push a version (adapter folder and model card) to the Hugging Face Hub: with the
    deployment's HF_TOKEN into the namespaces an admin allowed you, or with your own token."""
    from core import export as ex

    settings, actor = _ctx()
    token = None
    if own_token:  # handed to the Hub client only, never stored or printed
        token = user_token or typer.prompt("Your Hugging Face token", hide_input=True)
    try:
        pushed = ex.push_to_hub(actor, settings, ref, repo_id, private=not public, token=token)
    except _errors() as e:
        _fail(e)
    typer.echo(f"pushed {len(pushed.files)} files to {pushed.url}")


@app.command("merge")
def merge(
    ref: str = typer.Argument(..., help="version: id, NAME, NAME:v2"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="bfloat16 | float16 | float32"),
    shard_mb: float = typer.Option(5000.0, "--shard-mb", help="largest safetensors shard, MB"),
    hub_repo: str = typer.Option(
        "", "--hub-repo", help="also push the merged model here (worker's HF_TOKEN)"
    ),
    gpu: str = typer.Option("", "--gpu", help="GPU type id (default: GPU_TYPE)"),
    budget: float = typer.Option(0.0, "--budget", help="dollar cap (default: JOB_BUDGET_USD)"),
    plan_only: bool = typer.Option(
        False, "--plan-only", help="show memory, time and cost; launch nothing"
    ),
) -> None:
    """Merge a version into its base model's weights on the GPU endpoint (for serving
    without LoRA support); the shards go to storage, and to the Hub with --hub-repo."""
    from core import export as ex

    if dtype not in ex.MERGE_DTYPE_BYTES:
        _fail(ValueError(f"--dtype must be one of {', '.join(ex.MERGE_DTYPE_BYTES)}"))
    settings, actor = _ctx()
    try:
        if plan_only:
            plan = _merge_plan(actor, settings, ref, dtype, gpu)
        else:
            job, plan = ex.merge(
                actor,
                settings,
                ref,
                dtype=dtype,
                max_shard_size_mb=shard_mb,
                hub_repo=hub_repo or None,
                budget_usd=budget or None,
                gpu_type=gpu or None,
            )
    except _errors() as e:
        _fail(e)
    if plan is not None:
        _echo_merge_plan(plan)
    if not plan_only:
        typer.echo(
            f"job {job.id} {job.status}: merging {ref}; follow it with `brightrun jobs show {job.id}`"
        )


def _merge_plan(actor: Any, settings: Any, ref: str, dtype: str, gpu: str) -> Any:
    """The merge plan of version `ref` on `gpu` (or GPU_TYPE), launching nothing."""
    from core import adapters, jobs, planner
    from core import export as ex
    from core.db import session_scope

    with session_scope(settings) as s:
        v = adapters.resolve(actor, s, ref)
        base, size = v.base_model, v.size_bytes or 0
    facts = planner.describe(base, local_models_dir=settings.data_dir / "models")
    gpu_id = jobs.pricing_for(settings, gpu or None).priced_as
    return ex.plan_merge(
        facts,
        gpus=[gpu_id],
        dtype=dtype,
        adapter_bytes=size,
        tier=settings.price_tier,
        price_overrides=settings.gpu_prices,
    )


def _echo_merge_plan(plan: Any) -> None:
    v0, c0 = plan.verdicts[0], plan.costs[0]
    typer.echo(
        f"merge of {plan.model} in {plan.dtype}: needs {plan.need_bytes / 2**30:.1f} GiB on "
        f"{v0['name']} ({v0['verdict']}), {plan.disk_bytes / 2**30:.1f} GiB disk, "
        f"{plan.seconds_low / 60:.0f}-{plan.seconds_high / 60:.0f} min, "
        f"${c0['usd_low']:.2f}-${c0['usd_high']:.2f}"
    )


def cache_model(
    model: str = typer.Argument(..., help="hub id, e.g. Qwen/Qwen2.5-7B-Instruct"),
    revision: str = typer.Option("", "--revision", help="branch, tag or commit"),
    quantized_copy: bool = typer.Option(
        False, "--quantized-copy", help="also store a pre-quantised copy"
    ),
    quant: str = typer.Option("nf4", "--quant", help="nf4 | int8, for --quantized-copy"),
    status: bool = typer.Option(False, "--status", help="only say whether the model is cached"),
) -> None:
    """Download a base model into the network volume's model cache once, so later jobs
    start without downloading (the job's `started` event records its cold start)."""
    from core import actions

    settings, actor = _ctx()
    try:
        if status:
            typer.echo(actions.cache_status(actor, settings, model, revision or None))
            return
        job = actions.cache_model(
            actor,
            settings,
            model,
            revision=revision or None,
            quantized_copy=quantized_copy,
            quantization=quant,
        )
    except _errors() as e:
        _fail(e)
    typer.echo(
        f"job {job.id} {job.status}: caching {model}; follow it with `brightrun jobs show {job.id}`"
    )
