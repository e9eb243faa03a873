"""`brightrun plan`: will a job fit, how long will it take, what will it cost.

    brightrun plan --model M [--quant nf4] [--max-length N] [--batch B] [--lora-r R]
                   [--gpu G] [--gpus N] [--dataset ID | --rows N --tokens N] [--budget USD]
                   [--json]

Settings not given take the job spec's defaults. Token statistics come from a stored
dataset (`--dataset`) or from `--rows` and `--tokens` (mean tokens per row); without
them only memory and verdicts are printed. Times rest on the median tokens/s of your own
finished jobs of the model and quantisation on each GPU type, read from the database
(`--no-history` skips it), else on the default utilisation; `--measured` given with one
`--gpu` replaces that GPU's history. Each time line says which basis it used. Exits 2
when the model cannot be estimated or a setting is invalid (the reason is printed).

`--gpus N` plans the job on N GPUs (memory per GPU, time and cost for all N); every plan
also prints, per GPU type, the smallest count that fits with its sharding and cost, and
the cheapest of them.
"""

from __future__ import annotations

import json
from typing import Any

import typer

GIB = 1 << 30


def _spec(
    model: str,
    quantization: str | None,
    lora: dict[str, Any],
    training: dict[str, Any],
    gpus: int = 1,
) -> Any:
    """The job spec a launch with these settings would plan (`core.jobs.LaunchRequest`)."""
    from core import jobs

    given = {k: v for k, v in (("quantization", quantization),) if v is not None}
    request = jobs.LaunchRequest.build(
        model=model,
        lora={k: v for k, v in lora.items() if v is not None},
        training={k: v for k, v in training.items() if v is not None},
        gpus=gpus,
        **given,
    )
    return jobs.build_spec(
        job_id="plan",
        model=model,
        adapter_name="plan",
        quantization=request.quantization,
        lora=request.lora.model_dump(exclude_unset=True),
        training=request.training.model_dump(exclude_unset=True),
        gpus=request.gpus,
    )


def _dataset_tokens(dataset_id: str, settings: Any) -> Any:
    from cli.auth import acting_user
    from core import datasets
    from core.db import session_scope, upgrade
    from core.planner import token_stats_from_report

    upgrade(settings)
    actor = acting_user(settings)
    from core.errors import NotFound

    try:
        with session_scope(settings) as session:
            ds = datasets.get_dataset(actor, session, dataset_id)
            stats, valid = dict(ds.stats or {}), ds.valid_rows
    except NotFound as e:
        raise typer.BadParameter(str(e), param_hint="--dataset") from None
    tokens = token_stats_from_report(stats, valid)
    if tokens is None:
        raise typer.BadParameter(
            f"dataset {dataset_id} has no token statistics (its tokenizer was not available "
            "when it was added); pass --rows and --tokens instead",
            param_hint="--dataset",
        )
    return tokens


def _history(model: str, quantization: str, settings: Any) -> dict[str, list[float]]:
    """Tokens/s of the acting user's finished jobs of `model` per GPU type; nothing (with a
    note on stderr) when no user is signed in: the plan then uses the default utilisation."""
    from core.clients import auth
    from core.db import repo, session_scope, upgrade

    upgrade(settings)
    try:
        actor = auth.cli_actor(settings)
    except auth.AuthError as e:
        typer.echo(
            f"note: finished jobs not read ({e}); times use the default utilisation", err=True
        )
        return {}
    with session_scope(settings) as session:
        return repo.measured_throughput(actor, session, model, quantization)


def _hours(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _print(p: Any, budget: Any, timeout_ms: int | None, tokens: Any) -> None:
    m = p.model
    typer.echo(
        f"{m.id}  ({m.model_type}, {m.params.total / 1e9:.2f}B parameters, "
        f"{m.params.active / 1e9:.2f}B active per token, context {m.context_length:,})"
    )
    s = p.settings
    targets = (
        s["lora_targets"] if isinstance(s["lora_targets"], str) else ",".join(s["lora_targets"])
    )
    typer.echo(
        f"settings: {s['quantization']}, LoRA r{s['lora_r']} on {targets} "
        f"({s['lora_params'] / 1e6:.1f}M trainable{', + routed experts' if s['lora_on_experts'] else ''}), "
        f"micro-batch {s['micro_batch_size']} x {s['max_length']} tokens, grad accum "
        f"{s['grad_accum']}, gradient checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, "
        f"batching {s['packing']}"
        + (f", {s['gpus']} GPUs ({s['sharding']})" if s.get("gpus", 1) > 1 else "")
    )
    mem = p.memory
    typer.echo(
        f"\npeak GPU memory: {mem.total_bytes / GIB:.2f} GiB (peak at the {mem.peak_moment})"
    )
    for t in mem.terms:
        typer.echo(f"  {t.label:34s} {t.bytes / GIB:8.2f} GiB  {t.detail}")
    typer.echo("\nper GPU type:")
    for v in p.verdicts:
        line = f"  {v.name:18s} {v.memory_bytes / GIB:6.1f} GiB  {v.verdict.replace('_', ' '):13s}"
        if v.suggestion:
            line += f"  try: {v.suggestion}"
        typer.echo(line)
    if p.times:
        t0 = p.times[0]
        typer.echo(
            f"\ntime and cost ({tokens.rows:,} rows x {tokens.mean_tokens:,.0f} tokens, "
            f"{t0.training_tokens:,} training tokens):"
        )
        for t, c in zip(p.times, p.costs, strict=True):
            typer.echo(
                f"  {t.gpu:16s} {_hours(t.seconds):>8s} ({_hours(t.seconds_low)}-"
                f"{_hours(t.seconds_high)}) + cold start {_hours(t.cold_start_low_s)}-"
                f"{_hours(t.cold_start_high_s)}   ${c.usd_low:,.2f}-${c.usd_high:,.2f}   "
                f"{t.basis_text}"
            )
    _print_counts(p)
    if p.recommended_gpu:
        typer.echo(f"\nrecommended GPU: {p.recommended_gpu}")
    if budget is not None:
        typer.echo(f"budget: {budget.message}")
    if timeout_ms is not None:
        typer.echo(f"RunPod executionTimeout: {timeout_ms} ms ({_hours(timeout_ms / 1000)})")
    if p.notes:
        typer.echo("\nnotes:")
        for n in p.notes:
            typer.echo(f"  - {n}")


# long: every option of the command is a typer parameter
def plan(
    model: str = typer.Option(
        ...,
        "--model",
        help="catalog id, brightrun/tiny-chat, a model "
        "folder, or a hub id whose config.json is in the local cache",
    ),
    quant: str | None = typer.Option(
        None, "--quant", help="nf4, int8 or none (default: the job spec's, nf4)"
    ),
    max_length: int | None = typer.Option(None, "--max-length", help="tokens per row"),
    batch: int | None = typer.Option(None, "--batch", help="micro-batch size (rows per step)"),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="micro-batches per step"),
    lora_r: int | None = typer.Option(None, "--lora-r", help="LoRA rank"),
    targets: str | None = typer.Option(
        None, "--targets", help="LoRA target modules, comma separated, or all-linear"
    ),
    lora_on_experts: bool | None = typer.Option(
        None, "--lora-on-experts/--no-lora-on-experts", help="MoE: also adapt the routed experts"
    ),
    checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="recompute activations in backward",
    ),
    packing: bool | None = typer.Option(None, "--packing/--no-packing", help="pack samples"),
    epochs: float | None = typer.Option(None, "--epochs", help="passes over the data"),
    gpu: list[str] | None = typer.Option(
        None, "--gpu", help="GPU type id (repeatable; default: every type in the price table)"
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="stored dataset id: token statistics from its report"
    ),
    rows: int | None = typer.Option(None, "--rows", help="training rows (with --tokens)"),
    tokens: float | None = typer.Option(None, "--tokens", help="mean tokens per row"),
    measured: list[float] | None = typer.Option(
        None,
        "--measured",
        help="tokens/s finished "
        "jobs of this model achieved on --gpu "
        "(repeatable; the median replaces the formula "
        "and the database's history for that GPU)",
    ),
    history: bool = typer.Option(
        True,
        "--history/--no-history",
        help="use the tokens/s your finished jobs of this model measured (from the database)",
    ),
    budget: float | None = typer.Option(
        None, "--budget", help="job budget in USD: check it and print the RunPod executionTimeout"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    gpus: int = typer.Option(1, "--gpus", help="GPUs the job trains on (1-8)"),
) -> None:
    """Peak GPU memory term by term, fits / tight / does not fit per GPU type (with a
    suggestion), and with token statistics the training time and cost per GPU."""
    from core.errors import InvalidInput
    from core.settings import load_settings

    settings = load_settings()
    try:
        spec = _spec(
            model,
            quant,
            {"r": lora_r, "target_modules": _targets(targets), "lora_on_experts": lora_on_experts},
            {
                "max_length": max_length,
                "micro_batch_size": batch,
                "grad_accum": grad_accum,
                "gradient_checkpointing": checkpointing,
                "packing": packing,
                "epochs": epochs,
            },
            gpus,
        )
        stats = _token_stats(dataset, rows, tokens, settings)
        p = _plan(spec, model, stats, list(gpu) if gpu else None, measured, history, settings)
    except (InvalidInput, ValueError) as e:  # ValidationError is a ValueError
        typer.echo(f"cannot plan: {e}", err=True)
        raise typer.Exit(2) from None
    _output(p, stats, budget, as_json, _price_range(settings))


def _output(
    p: Any, stats: Any, budget: float | None, as_json: bool, price_range: str | None
) -> None:
    """The plan (checked against `budget` when one is given) and the price range over the
    endpoint's GPU types, as JSON or as text."""
    verdict = None
    if budget is not None and p.costs:
        from core.jobs import budget_verdict

        verdict = budget_verdict(p, p.recommended_gpu or p.costs[0].gpu, budget)
    if as_json:
        out = p.to_dict()
        if verdict is not None:
            out["budget"] = {
                "ok": verdict.check.ok,
                "level": verdict.check.level,
                "message": verdict.check.message,
                "execution_timeout_ms": verdict.timeout_ms,
            }
        out["price_range"] = price_range
        typer.echo(json.dumps(out, default=str))
        return
    _print(p, verdict.check if verdict else None, verdict.timeout_ms if verdict else None, stats)
    if price_range:
        typer.echo(f"price range: {price_range}")


def _print_counts(p: Any) -> None:
    """Per GPU type the smallest count that fits, its sharding and cost; the cheapest."""
    typer.echo("\nGPUs needed (smallest count that fits, per GPU type):")
    for c in p.gpu_counts:
        if c.count is None:
            typer.echo(f"  {c.name:18s} more than 8 do not fit")
            continue
        cost = f"  ${c.cost.usd_low:,.2f}-${c.cost.usd_high:,.2f}" if c.cost else ""
        typer.echo(
            f"  {c.name:18s} {c.count} x  {c.memory.total_bytes / GIB:6.1f} GiB each  "
            f"{c.sharding}{cost}"
        )
    best = p.recommended_count
    if best is not None and best.count and best.count > 1:
        typer.echo(f"  fewest GPUs at the lowest cost: {best.count} x {best.name} ({best.reason})")


def _price_range(settings: Any) -> str:
    """The price range over the endpoint's GPU types (`ENDPOINT_GPU_TYPES`), "" for one."""
    from core.errors import InvalidInput
    from core.jobs import pricing_for

    try:
        return pricing_for(settings).range_text
    except InvalidInput:
        return ""


def _targets(targets: str | None) -> Any:
    if not targets:
        return None
    return (
        "all-linear"
        if targets == "all-linear"
        else [t.strip() for t in targets.split(",") if t.strip()]
    )


def _token_stats(dataset: str | None, rows: int | None, tokens: float | None, settings: Any) -> Any:
    """Token statistics from a stored dataset, from --rows and --tokens, or None."""
    from core import planner
    from core.errors import InvalidInput

    if dataset:
        return _dataset_tokens(dataset, settings)
    if rows is None and tokens is None:
        return None
    if rows is None or tokens is None:
        raise InvalidInput("give both --rows and --tokens (mean tokens per row)")
    return planner.TokenStats(rows=rows, mean_tokens=tokens)


def _plan(
    spec: Any,
    model: str,
    stats: Any,
    gpus: list[str] | None,
    measured: list[float] | None,
    history: bool,
    settings: Any,
) -> Any:
    """The planner's plan; times from the user's finished jobs unless --no-history, and
    --measured for the first --gpu over them."""
    from core import planner
    from core.errors import InvalidInput

    facts = planner.describe(model, local_models_dir=settings.data_dir / "models")
    if measured and not gpus:
        raise InvalidInput("--measured needs --gpu: throughput is per GPU type")
    meas = _history(model, spec.quantization, settings) if history and stats else {}
    if measured and gpus:
        meas[gpus[0]] = list(measured)
    return planner.plan(
        spec,
        facts,
        tokens=stats,
        gpus=gpus,
        measured=meas,
        tier=settings.price_tier,
        price_overrides=settings.gpu_prices,
    )
