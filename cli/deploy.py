"""`brightrun deploy`: create or update BrightRun's RunPod resources and point .env at them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from core.deploy import (
    DEFAULT_GPUS,
    DeployConfig,
    DeployError,
    DeployResult,
    RunPodApi,
    apply_plan,
    make_plan,
    render_plan,
)
from core.settings import Settings, load_settings


def _d(name: str) -> str:
    """The schema's default, for help texts (defaults live in DeployConfig only)."""
    value = DeployConfig.model_fields[name].default
    return f"default {value!r}" if value == "" else f"default {value}"


# long: every option of the command is a typer parameter
def deploy(
    image: str = typer.Option(
        ...,
        help="trainer image in a registry RunPod can pull, e.g. docker.io/you/brightrun-trainer:0.1.0",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print every call it would make (key masked); change nothing"
    ),
    volume_size: int | None = typer.Option(
        None, help=f"network volume size in GB ({_d('volume_size_gb')})"
    ),
    volume_type: str | None = typer.Option(
        None,
        help="storage tier of a new network volume, STANDARD or HIGH_PERFORMANCE "
        "(default: the data centre's); fixed once the volume exists",
    ),
    data_center: str | None = typer.Option(
        None,
        "--data-center",
        "--data-centre",
        help=f"RunPod data centre of the volume and workers ({_d('data_center')})",
    ),
    gpu: list[str] | None = typer.Option(
        None,
        "--gpu",
        help="GPU type id, most preferred first; repeat for fallbacks "
        f"(default GPU_TYPE, then {', '.join(DEFAULT_GPUS)})",
    ),
    max_workers: int | None = typer.Option(
        None, help=f"most trainer workers at once ({_d('max_workers')})"
    ),
    gpu_count: list[int] | None = typer.Option(
        None,
        "--gpu-count",
        help="GPUs per trainer worker; repeat for one trainer endpoint per count in use "
        "(e.g. --gpu-count 1 --gpu-count 4; default 1). Multi-GPU jobs go to the endpoint "
        "of their count (GPU_CLUSTER_API_URLS)",
    ),
    idle_timeout: int | None = typer.Option(
        None, help=f"seconds a worker stays up after its last job ({_d('idle_timeout_s')})"
    ),
    execution_timeout: int | None = typer.Option(
        None,
        help=f"endpoint's default job time limit in seconds; each job sends its own "
        f"({_d('execution_timeout_s')})",
    ),
    container_disk: int | None = typer.Option(
        None, help=f"container disk in GB ({_d('container_disk_gb')})"
    ),
    hf_secret: str | None = typer.Option(
        None,
        help="name of the RunPod secret holding your Hugging Face token, referenced as "
        "{{ RUNPOD_SECRET_<name> }}; '' for none "
        f"({_d('hf_secret')})",
    ),
    registry_auth: str | None = typer.Option(
        None,
        help="RunPod container registry auth id, when the trainer image is private "
        "(Settings > Container Registry Auth in the console)",
    ),
    prefix: str | None = typer.Option(None, help=f"name prefix of every resource ({_d('prefix')})"),
    flashboot: bool = typer.Option(True, help="RunPod FlashBoot for faster cold starts"),
    min_cuda: str | None = typer.Option(
        None,
        help="CUDA version the trainer image is built for; workers go only to hosts whose "
        f"driver supports it; '' for any ({_d('min_cuda')})",
    ),
    with_vllm: bool = typer.Option(
        False, "--with-vllm", help="also a vLLM endpoint on the same volume that serves adapters"
    ),
    vllm_model: str | None = typer.Option(
        None, help="base model the vLLM endpoint serves (hub id)"
    ),
    base: list[str] | None = typer.Option(
        None,
        "--base",
        help="with --with-vllm: one more vLLM endpoint serving this base model (hub id), "
        "merged into INFERENCE_URLS; repeat for more",
    ),
    vllm_image: str | None = typer.Option(None, help=f"worker-vllm image ({_d('vllm_image')})"),
    vllm_gpu: list[str] | None = typer.Option(
        None, "--vllm-gpu", help="GPU types for the vLLM endpoint (default: the trainer's)"
    ),
    vllm_max_workers: int | None = typer.Option(
        None, help=f"most vLLM workers at once ({_d('vllm_max_workers')})"
    ),
    max_lora_rank: int | None = typer.Option(
        None,
        help=f"vLLM MAX_LORA_RANK: at least the largest rank you train ({_d('max_lora_rank')})",
    ),
    max_loras: int | None = typer.Option(
        None, help=f"vLLM MAX_LORAS per batch ({_d('max_loras')})"
    ),
    max_model_len: int | None = typer.Option(
        None, help="vLLM MAX_MODEL_LEN (default: the model's)"
    ),
    env_file: Path = typer.Option(Path(".env"), help="dotenv file to write the endpoint URLs into"),
) -> None:
    """Create or update the RunPod network volume, trainer template and endpoint (and with
    --with-vllm a vLLM endpoint) through RunPod's REST API v2, check each endpoint's
    /health, and write GPU_CLUSTER_API_URL / INFERENCE_URL (with --base also INFERENCE_URLS,
    with --gpu-count above 1 GPU_CLUSTER_API_URLS) into .env. Idempotent: a second run changes nothing. Needs RUNPOD_API_KEY (except --dry-run)."""
    settings = _settings()
    given = {
        "image": image,
        "volume_size_gb": volume_size,
        "volume_type": volume_type,
        "data_center": data_center,
        "max_workers": max_workers,
        "gpu_counts": tuple(gpu_count) if gpu_count else None,
        "idle_timeout_s": idle_timeout,
        "execution_timeout_s": execution_timeout,
        "container_disk_gb": container_disk,
        "hf_secret": hf_secret,
        "registry_auth_id": registry_auth,
        "prefix": prefix,
        "flashboot": flashboot,
        "min_cuda": min_cuda,
        "with_vllm": with_vllm,
        "vllm_model": vllm_model,
        "bases": tuple(base) if base else None,
        "vllm_image": vllm_image,
        "vllm_gpus": tuple(vllm_gpu) if vllm_gpu else None,
        "vllm_max_workers": vllm_max_workers,
        "max_lora_rank": max_lora_rank,
        "max_loras": max_loras,
        "max_model_len": max_model_len,
    }
    gpus = tuple(gpu) if gpu else (settings.gpu_type, *DEFAULT_GPUS)
    given["gpus"] = tuple(g for g in dict.fromkeys(gpus) if gpu or g != "LOCAL_CPU")
    config = _config(given)
    result = _run(config, settings, dry_run=dry_run, env_file=env_file)
    if result is not None:
        _report(result, config, settings, env_file)


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return load_settings()
    except ValidationError as e:  # its repr would echo every input, secrets included
        for err in e.errors():
            typer.echo(f"error: settings: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def _config(given: dict[str, Any]) -> DeployConfig:
    from pydantic import ValidationError

    try:
        return DeployConfig(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "options"
            typer.echo(f"error: {where}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def _run(
    config: DeployConfig, settings: Settings, *, dry_run: bool, env_file: Path
) -> DeployResult | None:
    """Plan against the account and, unless a dry run, apply; None for a dry run."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    base = settings.runpod_rest_url
    key = settings.runpod_api_key.get_secret_value()
    try:
        if dry_run:
            if key:
                with RunPodApi(key, base) as api:
                    plan = make_plan(config, api.observe())
            else:
                plan = make_plan(config, None)
            typer.echo(render_plan(plan, base, dry_run=True))
            return None
        with RunPodApi(key, base) as api:
            plan = make_plan(config, api.observe())
            typer.echo(render_plan(plan, base, dry_run=False))
            return apply_plan(plan, api, env_file, echo=typer.echo)
    except DeployError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def _report(result: DeployResult, config: DeployConfig, settings: Settings, env_file: Path) -> None:
    if result.env_changed:
        for k, (_, new) in result.env_changed.items():
            typer.echo(f"{env_file}: {k}={new}")
    else:
        typer.echo(f"{env_file} already points at these endpoints.")
    missing = []
    if settings.gpu_cluster_api_key.get_secret_value() in ("", "local-dev-key"):
        missing.append("GPU_CLUSTER_API_KEY")
    if config.with_vllm and settings.inference_api_key.get_secret_value() in ("", "local-dev-key"):
        missing.append("INFERENCE_API_KEY")
    if missing:
        typer.echo(
            f"Next: set {' and '.join(missing)} in {env_file} to a RunPod API key that may call "
            "these endpoints (a restricted key is enough); deploy writes no keys."
        )
