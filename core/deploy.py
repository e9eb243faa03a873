"""`brightrun deploy`: BrightRun's cloud side on RunPod, created or brought up to date.

What it manages, each found by name so that a second run changes nothing:

- a network volume (`<prefix>`, size, data centre), mounted at `/runpod-volume` in every
  worker: the model cache, checkpoints and adapters live there;
- a Serverless template for the trainer image (`<prefix>-trainer`): container disk, and
  `MODEL_CACHE_DIR` / `CHECKPOINT_DIR` / `ADAPTER_DIR` / `HF_HOME` on the volume;
  `HF_TOKEN` only as a RunPod secret reference (`{{ RUNPOD_SECRET_<name> }}`), never a
  token value;
- a Serverless endpoint on that template (`<prefix>-trainer`): GPU pools in order of
  preference (from `core.planner.GPU_TYPES[...].runpod_pool`), flex scaling (0 workers
  when idle), max workers, idle timeout, FlashBoot, the default execution timeout and
  the volume attached;
- optionally a vLLM template and endpoint (`<prefix>-vllm`, RunPod's worker-vllm image)
  on the same volume, serving adapters by name through vLLM's filesystem LoRA resolver
  over `/runpod-volume/adapters`.

RunPod's APIs, as documented: network volumes and the template list/update through the
REST API (`https://rest.runpod.io/v1`, plain httpx: the SDK has no call for them);
templates are created with the SDK's `runpod.create_template` and endpoints with
`runpod.create_endpoint`; endpoints are read and updated through the GraphQL API that
the SDK speaks (`saveEndpoint` with an `id` is RunPod's update; it replaces the whole
configuration, so every managed field is sent each time). `runpod.get_endpoints()`
selects neither `executionTimeoutMs` nor `flashBootType`, which deploy manages, so the
same `myself { endpoints }` query is sent with them through the SDK's GraphQL transport.
The SDK takes its key from `runpod.api_key` and its URL from `RUNPOD_API_BASE_URL`; both
are set only for the duration of each call and restored after it.

The account key (`RUNPOD_API_KEY`) travels only in the `Authorization` header. Nothing
here prints, logs or sends it anywhere else: a dry run shows `Bearer ****`, and error
text from RunPod is masked before it is raised.

What wins when the account and the options disagree: the options, except that a volume
is never shrunk (RunPod cannot) nor moved to another data centre (refused, with the
reason). Raises `DeployError` with a message that names the resource or setting.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.planner import GPU_TYPES

RUNPOD_GRAPHQL_BASE = "https://api.runpod.io"  # the SDK appends /graphql
RUNPOD_REST_BASE = "https://rest.runpod.io/v1"
RUNPOD_SERVERLESS_BASE = "https://api.runpod.ai/v2"

VOLUME_MOUNT = "/runpod-volume"
ADAPTERS_ON_VOLUME = f"{VOLUME_MOUNT}/adapters"
HF_HOME_ON_VOLUME = f"{VOLUME_MOUNT}/huggingface"  # the trainer image's own HF_HOME
# RunPod gives a new endpoint this execution timeout; the SDK's create_endpoint cannot set
# another, so deploy sets it right after creating one.
RUNPOD_DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_GPUS = ("H100_80GB_PCIE", "A100_80GB")
DEFAULT_VLLM_IMAGE = "runpod/worker-v1-vllm:v2.27.0"
# The CUDA versions an endpoint can ask its hosts' drivers to support (RunPod's list).
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
MASK = "****"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_DATA_CENTER = re.compile(r"^[A-Z]{2}-[A-Z]{2,4}-\d{1,2}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


class DeployError(RuntimeError):
    """Deploy cannot go on; the message names the resource or setting and what to do."""


# --------------------------------------------------------------------------- config


class DeployConfig(BaseModel):
    """What the user asked for. Defaults live here and only here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(description="trainer image, e.g. docker.io/you/brightrun-trainer:0.1.0")
    prefix: str = Field("brightrun", description="name of the volume; prefix of the others")
    volume_size_gb: int = Field(200, ge=10, le=4000)
    data_center: str = Field("EU-RO-1", description="RunPod data centre id of the volume")
    gpus: tuple[str, ...] = Field(DEFAULT_GPUS, description="GPU type ids, most preferred first")
    max_workers: int = Field(2, ge=1, le=100)
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
        if v is not None and (not v.strip() or "://" in v or '"' in v):
            raise ValueError(f"vllm_model {v!r} must be a hub id like 'Qwen/Qwen2.5-7B-Instruct'")
        return v

    @model_validator(mode="after")
    def _vllm(self) -> DeployConfig:
        if self.with_vllm and not self.vllm_model:
            raise ValueError("--with-vllm needs --vllm-model, the base model to serve")
        return self


def cuda_at_least(version: str) -> str:
    """The allowedCudaVersions value for a minimum version; "" (any) for no minimum."""
    if not version:
        return ""
    return ",".join(v for v in CUDA_VERSIONS if _vkey(v) >= _vkey(version))


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def _same(key: str, have: Any, want: Any) -> bool:
    if key == "allowedCudaVersions":  # a set, in whatever order RunPod keeps it
        return {x.strip() for x in (have or "").split(",") if x.strip()} == {
            x for x in want.split(",") if x
        }
    return have == want


def gpu_pools(gpu_ids: tuple[str, ...]) -> str:
    """RunPod Serverless pool ids for GPU type ids, in order of preference, each once."""
    return ",".join(dict.fromkeys(GPU_TYPES[g].runpod_pool for g in gpu_ids))


# --------------------------------------------------------------------------- desired state


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    size_gb: int
    data_center: str


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    image: str
    container_disk_gb: int
    env: dict[str, str]
    registry_auth_id: str = ""


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    template: str  # template name
    gpu_ids: str  # pool ids, comma-separated, in order of preference
    workers_max: int
    idle_timeout_s: int
    execution_timeout_ms: int
    flashboot: bool
    allowed_cuda: str = ""  # comma-separated; "" for any
    workers_min: int = 0  # flex: nothing runs (or bills) while idle
    scaler_type: str = "QUEUE_DELAY"
    scaler_value: int = 4
    gpu_count: int = 1


@dataclass(frozen=True)
class Desired:
    volume: VolumeSpec
    services: list[tuple[TemplateSpec, EndpointSpec]]
    env_keys: dict[str, str]  # .env key -> endpoint name whose URL it gets
    env_extra: dict[str, str]  # plain .env settings that go with these endpoints


def _secret_ref(name: str) -> str:
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
        trainer_env["HF_TOKEN"] = _secret_ref(config.hf_secret)
    services = [
        (
            TemplateSpec(
                f"{p}-trainer",
                config.image,
                config.container_disk_gb,
                trainer_env,
                config.registry_auth_id,
            ),
            EndpointSpec(
                name=f"{p}-trainer",
                template=f"{p}-trainer",
                gpu_ids=gpu_pools(config.gpus),
                workers_max=config.max_workers,
                idle_timeout_s=config.idle_timeout_s,
                execution_timeout_ms=config.execution_timeout_s * 1000,
                flashboot=config.flashboot,
                allowed_cuda=cuda_at_least(config.min_cuda),
            ),
        )
    ]
    env_keys = {"GPU_CLUSTER_API_URL": f"{p}-trainer"}
    env_extra: dict[str, str] = {}
    if config.with_vllm:
        assert config.vllm_model is not None  # checked by the model validator
        vllm_env = {
            "MODEL_NAME": config.vllm_model,
            "BASE_PATH": VOLUME_MOUNT,
            "ENABLE_LORA": "true",
            "MAX_LORA_RANK": str(config.max_lora_rank),
            "MAX_LORAS": str(config.max_loras),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
            "VLLM_PLUGINS": "lora_filesystem_resolver",
            "VLLM_LORA_RESOLVER_CACHE_DIR": ADAPTERS_ON_VOLUME,
        }
        if config.max_model_len:
            vllm_env["MAX_MODEL_LEN"] = str(config.max_model_len)
        if config.hf_secret:
            vllm_env["HF_TOKEN"] = _secret_ref(config.hf_secret)
        services.append(
            (
                TemplateSpec(
                    f"{p}-vllm", config.vllm_image, config.vllm_container_disk_gb, vllm_env
                ),
                EndpointSpec(
                    name=f"{p}-vllm",
                    template=f"{p}-vllm",
                    gpu_ids=gpu_pools(config.vllm_gpus or config.gpus),
                    workers_max=config.vllm_max_workers,
                    idle_timeout_s=config.vllm_idle_timeout_s,
                    execution_timeout_ms=config.execution_timeout_s * 1000,
                    flashboot=config.flashboot,
                ),
            )
        )
        env_keys["INFERENCE_URL"] = f"{p}-vllm"
        # Workers come and go, so adapters are found on the volume by the resolver, not
        # loaded into one worker at run time.
        env_extra = {
            "INFERENCE_LORA_LOADING": "resolver",
            "INFERENCE_ADAPTERS_DIR": ADAPTERS_ON_VOLUME,
        }
    volume = VolumeSpec(p, config.volume_size_gb, config.data_center)
    return Desired(volume, services, env_keys, env_extra)


# --------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class Ref:
    """The id of a resource this plan creates; known only once the call is made."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"<id of {self.kind} {self.name}>"


@dataclass(frozen=True)
class ApiCall:
    """One request to RunPod.

    kind: `rest` (httpx; `target` is the path under the REST base), `sdk` (a runpod SDK
    function named by `target`, `payload` its keyword arguments) or `graphql` (`target` is
    `saveEndpoint`, `payload` its input; sent through the SDK's GraphQL transport).
    `payload` may hold `Ref`s, resolved when the call is made.
    """

    kind: Literal["rest", "sdk", "graphql"]
    method: str
    target: str
    payload: Any = None
    params: dict[str, str] | None = None
    produces: Ref | None = None


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any


@dataclass
class Step:
    kind: Literal["volume", "template", "endpoint"]
    name: str
    action: Literal["create", "update", "unchanged"]
    resource_id: str | None = None
    changes: list[Change] = field(default_factory=list)
    calls: list[ApiCall] = field(default_factory=list)
    note: str = ""

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.name)


@dataclass
class DeployPlan:
    """Every call deploy makes, in order, against what the account holds now."""

    steps: list[Step]
    reads: list[ApiCall]
    env_keys: dict[str, str]  # .env key -> endpoint name
    env_extra: dict[str, str]  # plain settings written with the URLs
    observed: bool  # False: planned without reading the account (no key)

    @property
    def has_changes(self) -> bool:
        return any(s.action != "unchanged" for s in self.steps)

    def endpoint_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "endpoint"]


@dataclass
class Observed:
    volumes: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RunPodUrls:
    graphql: str = RUNPOD_GRAPHQL_BASE
    rest: str = RUNPOD_REST_BASE
    serverless: str = RUNPOD_SERVERLESS_BASE

    @classmethod
    def single_host(cls, base: str) -> RunPodUrls:
        """All three APIs on one host (a stand-in server): /graphql, /v1, /v2."""
        base = base.rstrip("/")
        return cls(graphql=base, rest=f"{base}/v1", serverless=f"{base}/v2")

    def endpoint_url(self, endpoint_id: str) -> str:
        return f"{self.serverless}/{endpoint_id}"


# --------------------------------------------------------------------------- GraphQL text

_ENDPOINT_FIELDS = (
    "id name templateId gpuIds gpuCount networkVolumeId locations idleTimeout scalerType "
    "scalerValue workersMin workersMax flashBootType executionTimeoutMs allowedCudaVersions"
)
ENDPOINTS_QUERY = "query Endpoints { myself { endpoints { " + _ENDPOINT_FIELDS + " } } }"
_ENUM_FIELDS = {"flashBootType"}


def _gql_value(key: str, value: Any) -> str:
    if key in _ENUM_FIELDS:
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    # A JSON string literal is a valid GraphQL string literal.
    return json.dumps(str(value))


def save_endpoint_mutation(fields: dict[str, Any]) -> str:
    body = ", ".join(f"{k}: {_gql_value(k, v)}" for k, v in fields.items())
    return "mutation { saveEndpoint(input: { " + body + " }) { " + _ENDPOINT_FIELDS + " } }"


# --------------------------------------------------------------------------- planning


def _endpoint_fields(spec: EndpointSpec, template_id: Any, volume_id: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "templateId": template_id,
        "gpuIds": spec.gpu_ids,
        "gpuCount": spec.gpu_count,
        "networkVolumeId": volume_id,
        "idleTimeout": spec.idle_timeout_s,
        "scalerType": spec.scaler_type,
        "scalerValue": spec.scaler_value,
        "workersMin": spec.workers_min,
        "workersMax": spec.workers_max,
        "flashBootType": "FLASHBOOT" if spec.flashboot else "OFF",
        "executionTimeoutMs": spec.execution_timeout_ms,
        "allowedCudaVersions": spec.allowed_cuda,
    }


def _by_name(items: list[dict[str, Any]], name: str, what: str, *aliases: str) -> dict | None:
    names = {name, *aliases}
    found = [i for i in items if i.get("name") in names]
    if len(found) > 1:
        ids = ", ".join(str(i.get("id")) for i in found)
        raise DeployError(
            f"{len(found)} {what}s are named {name!r} ({ids}); deploy finds resources by name, "
            f"so rename or delete all but one in the RunPod console, or use another --prefix"
        )
    return found[0] if found else None


def _plan_volume(spec: VolumeSpec, observed: Observed) -> Step:
    have = _by_name(observed.volumes, spec.name, "network volume")
    if have is None:
        body = {"name": spec.name, "size": spec.size_gb, "dataCenterId": spec.data_center}
        call = ApiCall("rest", "POST", "/networkvolumes", body, produces=Ref("volume", spec.name))
        return Step("volume", spec.name, "create", calls=[call])
    vid = str(have["id"])
    if have.get("dataCenterId") != spec.data_center:
        raise DeployError(
            f"network volume {spec.name!r} ({vid}) is in data centre {have.get('dataCenterId')}, "
            f"not {spec.data_center}; a volume cannot move. Deploy with "
            f"--data-center {have.get('dataCenterId')}, or another --prefix for a new volume"
        )
    size = int(have.get("size") or 0)
    if size < spec.size_gb:
        call = ApiCall("rest", "PATCH", f"/networkvolumes/{vid}", {"size": spec.size_gb})
        return Step(
            "volume", spec.name, "update", vid, [Change("size", size, spec.size_gb)], [call]
        )
    note = (
        f"already {size} GB, more than the {spec.size_gb} GB asked; volumes cannot shrink"
        if size > spec.size_gb
        else ""
    )
    return Step("volume", spec.name, "unchanged", vid, note=note)


def _plan_template(spec: TemplateSpec, observed: Observed) -> Step:
    have = _by_name(observed.templates, spec.name, "template")
    if have is None:
        kwargs = {
            "name": spec.name,
            "image_name": spec.image,
            "container_disk_in_gb": spec.container_disk_gb,
            "env": dict(spec.env),
            "is_serverless": True,
        }
        if spec.registry_auth_id:
            kwargs["registry_auth_id"] = spec.registry_auth_id
        call = ApiCall(
            "sdk", "POST", "create_template", kwargs, produces=Ref("template", spec.name)
        )
        return Step("template", spec.name, "create", calls=[call])
    tid = str(have["id"])
    if not have.get("isServerless"):
        raise DeployError(
            f"template {spec.name!r} ({tid}) is a Pod template; template names are unique in a "
            "RunPod account, so rename it or deploy with another --prefix"
        )
    have = {
        **have,
        "env": have.get("env") or {},
        "containerRegistryAuthId": have.get("containerRegistryAuthId") or "",
    }
    wanted = {
        "imageName": spec.image,
        "containerDiskInGb": spec.container_disk_gb,
        "env": spec.env,
        "containerRegistryAuthId": spec.registry_auth_id,
    }
    changes = [Change(k, have.get(k), v) for k, v in wanted.items() if have.get(k) != v]
    if not changes:
        return Step("template", spec.name, "unchanged", tid)
    body = {c.field: c.new for c in changes}
    call = ApiCall("rest", "PATCH", f"/templates/{tid}", body)
    return Step("template", spec.name, "update", tid, changes, [call])


def _plan_endpoint(
    spec: EndpointSpec, template_id: Any, volume_id: Any, observed: Observed
) -> Step:
    have = _by_name(observed.endpoints, spec.name, "endpoint", f"{spec.name} -fb")
    wanted = _endpoint_fields(spec, template_id, volume_id)
    if have is None:
        kwargs = {
            "name": spec.name,
            "template_id": template_id,
            "gpu_ids": spec.gpu_ids,
            "network_volume_id": volume_id,
            "idle_timeout": spec.idle_timeout_s,
            "scaler_type": spec.scaler_type,
            "scaler_value": spec.scaler_value,
            "workers_min": spec.workers_min,
            "workers_max": spec.workers_max,
            "flashboot": spec.flashboot,
            "gpu_count": spec.gpu_count,
            "allowed_cuda_versions": spec.allowed_cuda or None,
        }
        ref = Ref("endpoint", spec.name)
        calls = [ApiCall("sdk", "POST", "create_endpoint", kwargs, produces=ref)]
        if spec.execution_timeout_ms != RUNPOD_DEFAULT_EXECUTION_TIMEOUT_MS:
            calls.append(ApiCall("graphql", "POST", "saveEndpoint", {"id": ref, **wanted}))
        return Step("endpoint", spec.name, "create", calls=calls)
    eid = str(have["id"])
    changes = [
        Change(k, have.get(k), v)
        for k, v in wanted.items()
        if k != "name" and not isinstance(v, Ref) and not _same(k, have.get(k), v)
    ]
    changes += [Change(k, have.get(k), v) for k, v in wanted.items() if isinstance(v, Ref)]
    if not changes:
        return Step("endpoint", spec.name, "unchanged", eid)
    # saveEndpoint with an id replaces the whole configuration: send all of it, keeping the
    # fields deploy does not manage (name as RunPod shows it, locations) as they are.
    fields = {"id": eid, **wanted, "name": have.get("name") or spec.name}
    fields["locations"] = have.get("locations") or ""
    call = ApiCall("graphql", "POST", "saveEndpoint", fields)
    return Step("endpoint", spec.name, "update", eid, changes, [call])


def read_calls() -> list[ApiCall]:
    return [
        ApiCall("rest", "GET", "/networkvolumes"),
        # Templates bound to an endpoint are left out of the list unless asked for.
        ApiCall("rest", "GET", "/templates", params={"includeEndpointBoundTemplates": "true"}),
        ApiCall("sdk", "POST", "endpoints_query"),
    ]


def make_plan(config: DeployConfig, observed: Observed | None) -> DeployPlan:
    """The calls that bring the account to `config`. `observed=None`: as if it were empty."""
    desired = desired_state(config)
    state = observed or Observed()
    steps = [_plan_volume(desired.volume, state)]
    vol = steps[0]
    volume_id: Any = vol.resource_id or vol.ref
    for tspec, espec in desired.services:
        tstep = _plan_template(tspec, state)
        steps.append(tstep)
        template_id: Any = tstep.resource_id or tstep.ref
        steps.append(_plan_endpoint(espec, template_id, volume_id, state))
    return DeployPlan(
        steps, read_calls(), desired.env_keys, desired.env_extra, observed is not None
    )


# --------------------------------------------------------------------------- the client


def _resolve(value: Any, ids: dict[Ref, str]) -> Any:
    if isinstance(value, Ref):
        if value not in ids:
            raise DeployError(f"{value} is not known: the call that creates it did not run")
        return ids[value]
    if isinstance(value, dict):
        return {k: _resolve(v, ids) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(v, ids) for v in value]
    return value


def _placeholders(value: Any) -> Any:
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, dict):
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_placeholders(v) for v in value]
    return value


class RunPodApi:
    """RunPod's REST and GraphQL APIs with one account key, which goes only into the
    `Authorization` header. `sleep` is injectable so tests do not wait."""

    def __init__(
        self,
        api_key: str,
        urls: RunPodUrls | None = None,
        *,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise DeployError(
                "RUNPOD_API_KEY is not set: create an API key in the RunPod console "
                "(Settings > API Keys) and put it in .env or the environment"
            )
        import httpx

        self._key = api_key
        self.urls = urls or RunPodUrls()
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RunPodApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mask(self, text: str) -> str:
        return text.replace(self._key, MASK) if self._key else text

    # -- transports

    def rest(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        import httpx

        url = f"{self.urls.rest}{path}"
        attempts = 3 if method == "GET" else 1  # never repeat a write that may have landed
        for attempt in range(1, attempts + 1):
            try:
                resp = self._http.request(method, url, json=body, params=params)
            except httpx.TransportError as e:
                if attempt < attempts:
                    self._sleep(2.0 * attempt)
                    continue
                raise DeployError(self.mask(f"{method} {url} failed: {e}")) from None
            if resp.status_code in (429, 500, 502, 503, 504) and attempt < attempts:
                self._sleep(2.0 * attempt)
                continue
            if resp.status_code == 401:
                raise DeployError("RunPod refused RUNPOD_API_KEY (401): check the key")
            if resp.status_code >= 400:
                raise DeployError(
                    self.mask(
                        f"{method} {url}: RunPod answered {resp.status_code}: {resp.text[:500]}"
                    )
                )
            return resp.json() if resp.content else None
        raise AssertionError("unreachable")

    @contextmanager
    def _sdk(self) -> Iterator[Any]:
        import runpod

        saved_key, saved_url = runpod.api_key, os.environ.get("RUNPOD_API_BASE_URL")
        runpod.api_key = self._key
        os.environ["RUNPOD_API_BASE_URL"] = self.urls.graphql
        try:
            yield runpod
        finally:
            runpod.api_key = saved_key
            if saved_url is None:
                os.environ.pop("RUNPOD_API_BASE_URL", None)
            else:
                os.environ["RUNPOD_API_BASE_URL"] = saved_url

    def _sdk_call(self, what: str, fn: Callable[[], Any]) -> Any:
        import requests
        from runpod import error as rp_error

        try:
            return fn()
        except rp_error.AuthenticationError:
            raise DeployError("RunPod refused RUNPOD_API_KEY: check the key") from None
        except rp_error.QueryError as e:
            raise DeployError(self.mask(f"{what}: RunPod answered: {e}")) from None
        except (requests.RequestException, ValueError) as e:
            raise DeployError(self.mask(f"{what} failed: {e}")) from None

    def graphql(self, query: str, what: str) -> dict[str, Any]:
        with self._sdk():
            from runpod.api.graphql import run_graphql_query

            return self._sdk_call(what, lambda: run_graphql_query(query))["data"]

    # -- reads

    def observe(self) -> Observed:
        volumes = self.rest("GET", "/networkvolumes") or []
        templates = (
            self.rest("GET", "/templates", params={"includeEndpointBoundTemplates": "true"}) or []
        )
        data = self.graphql(ENDPOINTS_QUERY, "reading endpoints")
        endpoints = ((data or {}).get("myself") or {}).get("endpoints") or []
        return Observed(list(volumes), list(templates), list(endpoints))

    def health(self, endpoint_id: str, *, attempts: int = 6, delay_s: float = 5.0) -> dict:
        """`GET /v2/<id>/health`: job and worker counts. A new endpoint can take a few seconds
        to answer, so 404 and 5xx are retried."""
        import httpx

        url = f"{self.urls.endpoint_url(endpoint_id)}/health"
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                resp = self._http.get(url)
            except httpx.TransportError as e:
                last = str(e)
            else:
                if resp.status_code == 401:
                    raise DeployError(f"{url}: RunPod refused RUNPOD_API_KEY (401)")
                if resp.status_code == 200:
                    body = resp.json()
                    if isinstance(body, dict) and "workers" in body and "jobs" in body:
                        return body
                    last = f"unexpected answer {resp.text[:200]}"
                else:
                    last = f"status {resp.status_code}"
            if attempt < attempts:
                self._sleep(delay_s)
        raise DeployError(
            self.mask(f"{url} did not answer healthy after {attempts} tries ({last})")
        )

    # -- writes

    def execute(self, call: ApiCall, ids: dict[Ref, str]) -> str | None:
        """Make `call`; returns the id of what it created, if it creates something."""
        payload = _resolve(call.payload, ids)
        if call.kind == "rest":
            out = self.rest(call.method, call.target, payload, call.params)
            return str(out["id"]) if call.produces and isinstance(out, dict) else None
        if call.kind == "graphql":
            out = self.graphql(
                save_endpoint_mutation(payload), f"saveEndpoint {payload.get('name')}"
            )
            return str(out["saveEndpoint"]["id"])
        with self._sdk() as runpod:
            fn = getattr(runpod, call.target)
            out = self._sdk_call(f"runpod.{call.target}", lambda: fn(**payload))
        return str(out["id"]) if call.produces else None

    # -- how a call looks, for --dry-run

    def describe(self, call: ApiCall) -> str:
        return describe_call(call, self.urls)


def describe_call(call: ApiCall, urls: RunPodUrls) -> str:
    """The request `call` makes, as text, with the key masked and unknown ids as
    placeholders. Shows the exact GraphQL the SDK sends."""
    auth = f"Authorization: Bearer {MASK}"
    payload = _placeholders(call.payload)
    if call.kind == "rest":
        query = "?" + "&".join(f"{k}={v}" for k, v in call.params.items()) if call.params else ""
        lines = [f"{call.method} {urls.rest}{call.target}{query}", auth]
        if payload is not None:
            lines.append(json.dumps(payload, indent=2))
        return "\n".join(lines)
    head = f"POST {urls.graphql}/graphql"
    if call.kind == "graphql":
        return "\n".join([head, auth, save_endpoint_mutation(payload)])
    if call.target == "endpoints_query":
        return "\n".join(
            [
                head + "  (runpod.get_endpoints' query, plus the fields deploy manages)",
                auth,
                ENDPOINTS_QUERY,
            ]
        )
    from runpod.api.mutations import endpoints as endpoint_mutations
    from runpod.api.mutations import templates as template_mutations

    if call.target == "create_template":
        text = template_mutations.generate_pod_template(**payload)
    else:
        p = payload
        text = endpoint_mutations.generate_endpoint_mutation(
            p["name"],
            p["template_id"],
            p["gpu_ids"],
            p["network_volume_id"],
            None,
            p["idle_timeout"],
            p["scaler_type"],
            p["scaler_value"],
            p["workers_min"],
            p["workers_max"],
            p["flashboot"],
            p.get("allowed_cuda_versions"),
            p["gpu_count"],
        )
    text = " ".join(text.split())
    return "\n".join([f"runpod.{call.target}(...) -> {head}", auth, text])


# --------------------------------------------------------------------------- .env


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def update_env_file(path: Path, values: dict[str, str]) -> dict[str, tuple[str | None, str]]:
    """Set `values` in the dotenv file at `path`, keeping every other line as it is.

    A key already present is replaced where it stands (every occurrence); a new one is
    appended. Returns {key: (old, new)} for the keys whose value changed. The file is
    replaced atomically and keeps its permissions (0600 when created).
    """
    for k, v in values.items():
        if "\n" in v or "\r" in v:
            raise DeployError(f"{k}: a value for .env cannot span lines")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    old: dict[str, str] = {}
    out: list[str] = []
    seen: set[str] = set()
    for line in lines:
        m = _ENV_LINE.match(line)
        if m and m.group(1) in values:
            key = m.group(1)
            old.setdefault(key, line.split("=", 1)[1].strip().strip("'\""))
            if key not in seen:
                out.append(f"{key}={values[key]}")
                seen.add(key)
            continue
        out.append(line)
    missing = [k for k in values if k not in seen]
    if missing:
        if out and out[-1].strip():
            out.append("")
        out.append("# RunPod endpoints, written by `brightrun deploy`")
        out.extend(f"{k}={values[k]}" for k in missing)
    changed = {k: (old.get(k), v) for k, v in values.items() if old.get(k) != v}
    if not changed and path.exists():
        return {}
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=".env.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return changed


# --------------------------------------------------------------------------- the command


@dataclass
class DeployResult:
    plan: DeployPlan
    ids: dict[Ref, str] = field(default_factory=dict)
    endpoint_urls: dict[str, str] = field(default_factory=dict)  # .env key -> value
    health: dict[str, dict] = field(default_factory=dict)  # endpoint name -> /health answer
    env_changed: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    applied: bool = False


def env_values(plan: DeployPlan, urls: RunPodUrls, ids: dict[Ref, Any]) -> dict[str, str]:
    """What deploy writes into .env: endpoint URLs and plain settings, never a key."""
    out = {}
    for key, endpoint in plan.env_keys.items():
        base = urls.endpoint_url(str(ids[Ref("endpoint", endpoint)]))
        out[key] = f"{base}/openai/v1" if key == "INFERENCE_URL" else base
    return {**out, **plan.env_extra}


def apply_plan(
    plan: DeployPlan,
    api: RunPodApi,
    env_file: Path,
    echo: Callable[[str], None] = print,
) -> DeployResult:
    """Make the plan's calls in order, check each endpoint's /health, then write the
    endpoint URLs into `env_file`. A failure stops at once with what was done so far."""
    result = DeployResult(plan)
    ids = result.ids
    for step in plan.steps:
        if step.resource_id:
            ids[step.ref] = step.resource_id
    for step in plan.steps:
        for call in step.calls:
            created = api.execute(call, ids)
            if call.produces and created:
                ids[call.produces] = created
        if step.action != "unchanged":
            echo(
                f"{'created' if step.action == 'create' else 'updated'} {step.kind} "
                f"{step.name} ({ids[step.ref]})"
            )
    for step in plan.endpoint_steps():
        eid = ids[step.ref]
        result.health[step.name] = api.health(eid)
        workers = result.health[step.name].get("workers") or {}
        up = sum(v for v in workers.values() if isinstance(v, int))
        echo(
            f"endpoint {step.name} ({eid}) answers /health: {up} workers up "
            "(flex: workers start with the first job)"
        )
    result.endpoint_urls = env_values(plan, api.urls, ids)
    result.env_changed = update_env_file(env_file, result.endpoint_urls)
    result.applied = True
    return result


def render_plan(plan: DeployPlan, urls: RunPodUrls, *, dry_run: bool) -> str:
    """The plan as text: what each step does and, for a dry run, every request in full."""
    out: list[str] = []
    if dry_run:
        out.append("Dry run: nothing is created or changed, and .env is not written.")
        if plan.observed:
            out.append("\nRead the account (made now, read-only):")
        else:
            out.append(
                "\nRUNPOD_API_KEY is not set, so the account was not read: planned as if it "
                "held nothing yet. With the key, deploy first reads:"
            )
        for call in plan.reads:
            out.append(_indent(describe_call(call, urls).split("\n")[0]))
    marks = {"create": "+ create", "update": "~ update", "unchanged": "= unchanged"}
    out.append("")
    for step in plan.steps:
        rid = f" ({step.resource_id})" if step.resource_id else ""
        out.append(f"{marks[step.action]} {step.kind} {step.name}{rid}")
        for c in step.changes:
            out.append(f"    {c.field}: {_short(c.old)} -> {_short(c.new)}")
        if step.note:
            out.append(f"    {step.note}")
        if dry_run:
            for call in step.calls:
                out.append(_indent(describe_call(call, urls), 4))
                out.append("")
    if dry_run:
        out.append("Then, for each endpoint:")
        for step in plan.endpoint_steps():
            eid = step.resource_id or str(step.ref)
            out.append(_indent(f"GET {urls.endpoint_url(eid)}/health", 4))
            out.append(_indent(f"Authorization: Bearer {MASK}", 4))
        out.append("and writes into .env (other lines kept as they are):")
        ids = {s.ref: s.resource_id or str(s.ref) for s in plan.endpoint_steps()}
        for k, v in env_values(plan, urls, ids).items():
            out.append(_indent(f"{k}={v}", 4))
    elif not plan.has_changes:
        out.append("Nothing to change: the account already matches.")
    return "\n".join(out)


def _short(value: Any) -> str:
    text = json.dumps(_placeholders(value)) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + line for line in text.split("\n"))
