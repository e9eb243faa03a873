"""What `brightrun deploy` is asked for (`DeployConfig`) and the resources that follows
from it (`desired_state`). Pure: no network. Defaults live in `DeployConfig` only.

Names: the network volume is `<prefix>`, the trainer template and endpoint
`<prefix>-trainer`, the optional vLLM ones `<prefix>-vllm`. Each further count in
`gpu_counts` (multi-GPU jobs) is one more trainer template and endpoint,
`<prefix>-trainer-x<count>`, whose workers get that many GPUs (`gpu.count`); their URLs go
to .env as GPU_CLUSTER_API_URLS (`{"<count>": "<URL>"}`), where jobs of that count go. `HF_TOKEN` is only ever a
RunPod secret reference (`{{ RUNPOD_SECRET_<name> }}`); a value that looks like a token is
refused. Raises pydantic's `ValidationError` with the option named.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.deploy.tool_parsing import worker_vllm_env
from core.planner import GPU_TYPES, pool_gpu_types

VOLUME_MOUNT = "/runpod-volume"
ADAPTERS_ON_VOLUME = f"{VOLUME_MOUNT}/adapters"
HF_HOME_ON_VOLUME = f"{VOLUME_MOUNT}/huggingface"  # the trainer image's own HF_HOME
DEFAULT_GPUS = ("H100_80GB_PCIE", "A100_80GB")
DEFAULT_VLLM_IMAGE = "runpod/worker-v1-vllm:v2.27.0"
# The CUDA versions an endpoint's hosts may report (RunPod's list); --min-cuda is one.
CUDA_VERSIONS = (
    "11.8",
    "12.0",
    "12.1",
    "12.2",
    "12.3",
    "12.4",
    "12.5",
    "12.6",
    "12.7",
    "12.8",
    "12.9",
    "13.0",
)
VolumeType = Literal["STANDARD", "HIGH_PERFORMANCE"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_DATA_CENTER = re.compile(r"^[A-Z]{2}-[A-Z]{2,4}-\d{1,2}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


class DeployConfig(BaseModel):
    """What the user asked for. Defaults live here and only here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(description="trainer image, e.g. docker.io/you/brightrun-trainer:0.1.0")
    prefix: str = Field("brightrun", description="name of the volume; prefix of the others")
    volume_size_gb: int = Field(200, ge=10, le=4096)
    volume_type: VolumeType | None = Field(
        None, description="storage tier of a new volume; None: the data centre's default"
    )
    data_center: str = Field("EU-RO-1", description="RunPod data centre id of the volume")
    gpus: tuple[str, ...] = Field(DEFAULT_GPUS, description="GPU type ids, most preferred first")
    max_workers: int = Field(2, ge=1, le=100)
    gpu_counts: tuple[int, ...] = Field(
        (1,), description="GPUs per trainer worker: one trainer endpoint per count (1-8)"
    )
    idle_timeout_s: int = Field(5, ge=1, le=3600)
    execution_timeout_s: int = Field(
        86_400, ge=60, le=7 * 86_400, description="endpoint default; each job sends its own"
    )
    container_disk_gb: int = Field(100, ge=10, le=1000)
    registry_auth_id: str = Field(
        "", description="RunPod container registry auth id, for a private trainer image"
    )
    hf_secret: str = Field(
        "hf_token", description="RunPod secret holding the Hugging Face token; '' for none"
    )
    flashboot: bool = True
    min_cuda: str = Field(
        "12.8",
        description="CUDA version of the trainer image; hosts with older drivers are skipped",
    )

    with_vllm: bool = False
    vllm_model: str | None = Field(None, description="base model the vLLM endpoint serves")
    bases: tuple[str, ...] = Field(
        (), description="further base models, each on its own vLLM endpoint (INFERENCE_URLS)"
    )
    vllm_image: str = DEFAULT_VLLM_IMAGE
    vllm_gpus: tuple[str, ...] | None = Field(None, description="default: the trainer's GPUs")
    vllm_max_workers: int = Field(1, ge=1, le=100)
    vllm_idle_timeout_s: int = Field(60, ge=1, le=3600)
    vllm_container_disk_gb: int = Field(50, ge=10, le=1000)
    max_lora_rank: int = Field(64, ge=1, le=1024)
    max_loras: int = Field(4, ge=1, le=256)
    max_model_len: int | None = Field(None, ge=256)

    @field_validator("image", "vllm_image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not _IMAGE.match(v):
            raise ValueError(
                f"image {v!r} is not an image reference like "
                "'docker.io/you/brightrun-trainer:0.1.0'"
            )
        return v

    @field_validator("registry_auth_id")
    @classmethod
    def _registry(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError(
                "registry_auth_id must be the id RunPod shows for saved registry credentials "
                "(Settings > Container Registry Auth), not a user name or password"
            )
        return v

    @field_validator("min_cuda")
    @classmethod
    def _cuda(cls, v: str) -> str:
        if v and v not in CUDA_VERSIONS:
            raise ValueError(f"min_cuda {v!r}: one of {', '.join(CUDA_VERSIONS)}, or '' for any")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"prefix {v!r}: use 1-48 letters, digits, '-' or '_'")
        return v

    @field_validator("data_center")
    @classmethod
    def _dc(cls, v: str) -> str:
        if not _DATA_CENTER.match(v):
            raise ValueError(f"data centre {v!r} is not a RunPod data centre id like 'EU-RO-1'")
        return v

    @field_validator("gpus", "vllm_gpus")
    @classmethod
    def _gpus(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("name at least one GPU type")
        unknown = [g for g in v if g not in GPU_TYPES]
        if unknown:
            raise ValueError(
                f"unknown GPU type {', '.join(unknown)}; known: {', '.join(sorted(GPU_TYPES))}"
            )
        return tuple(dict.fromkeys(v))

    @field_validator("gpu_counts")
    @classmethod
    def _counts(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [c for c in v if not 1 <= c <= 8]
        if not v or bad:
            raise ValueError(f"gpu_counts {list(v)}: each a GPU count from 1 to 8 (1: one GPU)")
        return tuple(sorted(set(v)))

    @field_validator("hf_secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        if re.fullmatch(r"hf_[A-Za-z0-9]{20,}", v):
            raise ValueError(
                "hf_secret looks like a Hugging Face token: give the NAME of the RunPod secret "
                "that holds it (e.g. hf_token), never the token itself"
            )
        if v and not _SECRET_NAME.match(v):
            raise ValueError(
                f"hf_secret {v!r} must be the name of a RunPod secret (letters, digits, '_'), "
                "not a token"
            )
        return v

    @field_validator("vllm_model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        if v is not None:
            _check_model_id("vllm_model", v)
        return v

    @field_validator("bases")
    @classmethod
    def _bases(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for model in v:
            _check_model_id("base", model)
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _vllm(self) -> DeployConfig:
        if self.bases and not self.with_vllm:
            raise ValueError("--base needs --with-vllm: each base is one more vLLM endpoint")
        if self.with_vllm and not (self.vllm_model or self.bases):
            raise ValueError("--with-vllm needs --vllm-model or --base, the base model to serve")
        return self


def _check_model_id(option: str, v: str) -> None:
    if not v.strip() or "://" in v or '"' in v or "\n" in v:
        raise ValueError(f"{option} {v!r} must be a hub id like 'Qwen/Qwen2.5-7B-Instruct'")


def base_endpoint_name(prefix: str, model: str) -> str:
    """The vLLM endpoint (and template) name of a further base: `<prefix>-vllm-<slug>-<hash>`,
    the slug readable, the hash of the exact model id so that two ids never share a name."""
    digest = hashlib.sha256(model.encode()).hexdigest()[:6]
    room = max(0, 48 - len(prefix) - len("-vllm-") - len(digest) - 1)
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower())[:room].strip("-")
    return f"{prefix}-vllm-{slug}-{digest}" if slug else f"{prefix}-vllm-{digest}"


def gpu_pools(gpu_ids: tuple[str, ...]) -> tuple[str, ...]:
    """RunPod Serverless pool ids for GPU type ids, in order of preference, each once."""
    return tuple(dict.fromkeys(GPU_TYPES[g].runpod_pool for g in gpu_ids))


# --------------------------------------------------------------------------- desired state


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    size_gb: int
    data_center: str
    type: VolumeType | None = None  # None: whatever tier the data centre gives by default


@dataclass(frozen=True)
class TemplateSpec:
    """A Serverless template; the endpoint made from it carries the same container."""

    name: str
    image: str
    container_disk_gb: int
    env: dict[str, str]
    registry_auth_id: str = ""


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    pools: tuple[str, ...]  # GPU pool ids, in order of preference
    workers_max: int
    idle_timeout_s: int
    execution_timeout_ms: int
    flashboot: bool
    data_center: str  # workers run where the volume is
    min_cuda: str = ""  # "" for any
    workers_min: int = 0  # flex: nothing runs (or bills) while idle
    queue_delay_s: float = 4
    gpu_count: int = 1


@dataclass(frozen=True)
class Desired:
    volume: VolumeSpec
    services: list[tuple[TemplateSpec, EndpointSpec]]
    env_keys: dict[str, str]  # .env key -> endpoint name whose URL it gets
    env_extra: dict[str, str]  # plain .env settings that go with these endpoints
    # further bases: served model -> endpoint name; merged into INFERENCE_URLS
    base_endpoints: dict[str, str] = field(default_factory=dict)
    # multi-GPU trainers: GPU count -> endpoint name; GPU_CLUSTER_API_URLS
    count_endpoints: dict[str, str] = field(default_factory=dict)


def secret_ref(name: str) -> str:
    return "{{ RUNPOD_SECRET_" + name + " }}"


def desired_state(config: DeployConfig) -> Desired:
    """The resources `config` asks for. Pure: no network."""
    p = config.prefix
    trainer_env = {
        "MODEL_CACHE_DIR": f"{VOLUME_MOUNT}/models",
        "CHECKPOINT_DIR": f"{VOLUME_MOUNT}/checkpoints",
        "ADAPTER_DIR": ADAPTERS_ON_VOLUME,
        "HF_HOME": HF_HOME_ON_VOLUME,
    }
    if config.hf_secret:
        trainer_env["HF_TOKEN"] = secret_ref(config.hf_secret)
    trainer = (
        TemplateSpec(
            f"{p}-trainer",
            config.image,
            config.container_disk_gb,
            trainer_env,
            config.registry_auth_id,
        ),
        EndpointSpec(
            name=f"{p}-trainer",
            pools=gpu_pools(config.gpus),
            workers_max=config.max_workers,
            idle_timeout_s=config.idle_timeout_s,
            execution_timeout_ms=config.execution_timeout_s * 1000,
            flashboot=config.flashboot,
            data_center=config.data_center,
            min_cuda=config.min_cuda,
        ),
    )
    counts = {str(c): f"{p}-trainer-x{c}" for c in config.gpu_counts if c > 1}
    more = [
        (
            replace(trainer[0], name=name),
            replace(trainer[1], name=name, gpu_count=int(c)),
        )
        for c, name in counts.items()
    ]
    volume = VolumeSpec(p, config.volume_size_gb, config.data_center, config.volume_type)
    # What the pools may run a job on: the budget's time limit is set at the dearest.
    gpu_types = json.dumps(pool_gpu_types(trainer[1].pools), separators=(",", ":"))
    desired = Desired(
        volume,
        [trainer, *more],
        {"GPU_CLUSTER_API_URL": f"{p}-trainer"},
        {"ENDPOINT_GPU_TYPES": gpu_types},
        count_endpoints=counts,
    )
    return _with_vllm(desired, config) if config.with_vllm else desired


def _vllm_service(config: DeployConfig, name: str, model: str) -> tuple[TemplateSpec, EndpointSpec]:
    """A vLLM template and endpoint named `name` that serve `model` from the volume."""
    vllm_env = {
        "MODEL_NAME": model,
        "BASE_PATH": VOLUME_MOUNT,
        "ENABLE_LORA": "true",
        "MAX_LORA_RANK": str(config.max_lora_rank),
        "MAX_LORAS": str(config.max_loras),
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
        "VLLM_PLUGINS": "lora_filesystem_resolver",
        "VLLM_LORA_RESOLVER_CACHE_DIR": ADAPTERS_ON_VOLUME,
        **worker_vllm_env(model),  # tool calls and reasoning parsed (Qwen)
    }
    if config.max_model_len:
        vllm_env["MAX_MODEL_LEN"] = str(config.max_model_len)
    if config.hf_secret:
        vllm_env["HF_TOKEN"] = secret_ref(config.hf_secret)
    return (
        TemplateSpec(name, config.vllm_image, config.vllm_container_disk_gb, vllm_env),
        EndpointSpec(
            name=name,
            pools=gpu_pools(config.vllm_gpus or config.gpus),
            workers_max=config.vllm_max_workers,
            idle_timeout_s=config.vllm_idle_timeout_s,
            execution_timeout_ms=config.execution_timeout_s * 1000,
            flashboot=config.flashboot,
            data_center=config.data_center,
        ),
    )


def _with_vllm(desired: Desired, config: DeployConfig) -> Desired:
    """`desired` plus the vLLM templates and endpoints on the same volume: `<prefix>-vllm`
    for --vllm-model (INFERENCE_URL), one per further base (INFERENCE_URLS)."""
    p = config.prefix
    services, env_keys = list(desired.services), dict(desired.env_keys)
    if config.vllm_model:
        services.append(_vllm_service(config, f"{p}-vllm", config.vllm_model))
        env_keys["INFERENCE_URL"] = f"{p}-vllm"
    bases = {}
    for model in config.bases:
        if model != config.vllm_model:  # that one is the default endpoint's already
            bases[model] = base_endpoint_name(p, model)
            services.append(_vllm_service(config, bases[model], model))
    # Workers come and go, so adapters are found on the volume by the resolver, not
    # loaded into one worker at run time.
    extra = {"INFERENCE_LORA_LOADING": "resolver", "INFERENCE_ADAPTERS_DIR": ADAPTERS_ON_VOLUME}
    return Desired(
        desired.volume,
        services,
        env_keys,
        {**desired.env_extra, **extra},
        bases,
        desired.count_endpoints,
    )
