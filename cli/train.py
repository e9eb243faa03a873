"""`brightrun train`: launch a job (the preset's values under the options given), and follow
it with a live progress bar (`--wait`; `brightrun jobs retry/relaunch --wait` too).

    brightrun train --dataset ID --model M [--preset P] [settings] [--budget USD] [--wait]

Errors come back as one line naming what is wrong, exit code 1 (2 for bad input); every
reason the preflight refuses a job is printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cli.common import actor as _actor
from cli.common import errors as _errors
from cli.common import fail as _fail
from cli.common import money as _money
from cli.common import settings as _settings
from cli.follow import follow
from trainer.shared.methods import METHODS, SETTINGS, Method, info

METHOD_HELP = "; ".join(f"{m}: {i.help}" for m, i in METHODS.items() if i.trains)


def setting_help(name: str) -> str:
    """A method setting's help for its option, with the methods that read it and its default."""
    users = "/".join(
        m.upper() for m, i in METHODS.items() if name in i.settings + i.grading_settings
    )
    s = SETTINGS[name]
    return f"{users}: {s.help} (default {s.default})"


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
