"""`brightrun deploy`: BrightRun's cloud side on RunPod, created or brought up to date
through RunPod's REST API v2 (`RUNPOD_REST_URL`, default `https://api.runpod.io/v2`).

What it manages, each found by name so that a second run changes nothing:

- a network volume (`<prefix>`, size, data centre, optionally storage tier), mounted at
  `/runpod-volume` in every worker: the model cache, checkpoints and adapters live there;
- a Serverless template for the trainer image (`<prefix>-trainer`): container disk, and
  `MODEL_CACHE_DIR` / `CHECKPOINT_DIR` / `ADAPTER_DIR` / `HF_HOME` on the volume;
  `HF_TOKEN` only as a RunPod secret reference (`{{ RUNPOD_SECRET_<name> }}`), never a
  token value;
- a queue-based Serverless endpoint made from that template (`<prefix>-trainer`): GPU
  pools in order of preference (from `core.planner.GPU_TYPES[...].runpod_pool`), 0 workers
  when idle, max workers, idle timeout, FlashBoot, the default execution timeout, a CUDA
  floor, the volume attached and its data centre;
- optionally a vLLM template and endpoint (`<prefix>-vllm`, RunPod's worker-vllm image)
  on the same volume, serving adapters by name through vLLM's filesystem LoRA resolver
  over `/runpod-volume/adapters`.

Then it writes each endpoint's job URL (from its `requestUrls`) into `.env`.

Modules: `config` (options and desired state), `plan` (diff and calls), `client` (the
REST v2 client), `apply` (making the calls), `envfile` (the `.env` writer), `render`
(the plan as text). Every error is a `DeployError`; RunPod's own refusals are
`RunPodProblem`s that carry RunPod's problem document.
"""

from core.deploy.apply import DeployResult, apply_plan, env_values, request_urls
from core.deploy.client import MASK, RunPodApi, describe_call
from core.deploy.config import (
    ADAPTERS_ON_VOLUME,
    CUDA_VERSIONS,
    DEFAULT_GPUS,
    DEFAULT_VLLM_IMAGE,
    HF_HOME_ON_VOLUME,
    VOLUME_MOUNT,
    DeployConfig,
    Desired,
    EndpointSpec,
    TemplateSpec,
    VolumeSpec,
    desired_state,
    gpu_pools,
)
from core.deploy.envfile import update_env_file
from core.deploy.errors import DeployError, RunPodProblem
from core.deploy.plan import ApiCall, Change, DeployPlan, Observed, Ref, Step, make_plan
from core.deploy.render import render_plan

__all__ = [
    "ADAPTERS_ON_VOLUME",
    "CUDA_VERSIONS",
    "DEFAULT_GPUS",
    "DEFAULT_VLLM_IMAGE",
    "HF_HOME_ON_VOLUME",
    "MASK",
    "VOLUME_MOUNT",
    "ApiCall",
    "Change",
    "DeployConfig",
    "DeployError",
    "DeployPlan",
    "DeployResult",
    "Desired",
    "EndpointSpec",
    "Observed",
    "Ref",
    "RunPodApi",
    "RunPodProblem",
    "Step",
    "TemplateSpec",
    "VolumeSpec",
    "apply_plan",
    "desired_state",
    "describe_call",
    "env_values",
    "gpu_pools",
    "make_plan",
    "render_plan",
    "request_urls",
    "update_env_file",
]
