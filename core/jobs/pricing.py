"""What a job runs on and what it is billed at.

`pricing_for(settings, gpu_type, gpus)`: the GPU type and Serverless rate of a new job, and
the rate range over the GPU types the endpoint may pick (`ENDPOINT_GPU_TYPES`); a job on
`gpus` GPUs is billed `gpus` times the per-GPU rate (its `rate_per_s`, and so its live and
billed cost and the time its budget buys, count every GPU). Jobs on
the local endpoint (or any endpoint on loopback) run on this machine's CPU but are priced
at the configured GPU type's rate, recorded as GPU type `LOCAL_CPU`, tier `local`.
`execution_limits(budget, rate, cap_s)`: the platform's and the worker's time limits for
a budget (`core.planner.execution_limits`), a budget under a minute being `InvalidInput`. `trainer_endpoint(settings, gpus)`: the
endpoint a multi-GPU job goes to (GPU_CLUSTER_API_URLS), `InvalidInput` naming the deploy
command when none has that many GPUs per worker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from core import planner
from core.errors import InvalidInput
from core.settings import Settings

LOCAL_GPU = planner.LOCAL_CPU.id
LOCAL_TIER = "local"


@dataclass(frozen=True)
class Pricing:
    gpu_type: str  # what the job runs on (LOCAL_CPU on the local endpoint)
    tier: str  # flex | active | local
    rate_per_s: float
    priced_as: str  # the GPU type whose rate is used
    # The cheapest and dearest rate over the GPU types the endpoint may pick (the budget's
    # time limit is computed at `cap_rate_per_s`, so the cap holds on any of them).
    low_rate_per_s: float = 0.0
    cap_rate_per_s: float = 0.0
    gpu_types: tuple[str, ...] = ()
    gpus: int = 1  # the rates above are for all of them

    @property
    def is_local(self) -> bool:
        return self.gpu_type == LOCAL_GPU

    @property
    def note(self) -> str:
        if self.gpus > 1:
            one = replace(self, gpus=1, rate_per_s=self.rate_per_s / self.gpus)
            return f"{self.gpus} x {one.note} = ${self.rate_per_s * 3600:.2f}/h"
        if self.is_local:
            return (
                f"runs on {self.gpu_type} (this machine's CPU), billed at "
                f"${self.rate_per_s * 3600:.2f}/h ({self.priced_as}'s Serverless rate)"
            )
        return f"{self.priced_as} Serverless {self.tier} at ${self.rate_per_s * 3600:.2f}/h"

    @property
    def range_text(self) -> str:
        """One line: the price range over the endpoint's GPU types ("" for one price)."""
        if len(self.gpu_types) < 2 or self.low_rate_per_s == self.cap_rate_per_s:
            return ""
        return (
            f"the endpoint may run it on {', '.join(self.gpu_types)}: "
            f"${self.low_rate_per_s * 3600:.2f}-${self.cap_rate_per_s * 3600:.2f}/h; "
            f"billed at the GPU that ran, the budget's time limit set at the dearest"
        )


def pricing_for(settings: Settings, gpu_type: str | None = None, gpus: int = 1) -> Pricing:
    """The GPU type and rate a new job on `gpus` GPUs is billed at under `settings`."""
    gpu = gpu_type or settings.gpu_type
    pool = tuple(dict.fromkeys([gpu, *settings.endpoint_gpu_types]))
    try:
        rates = [
            gpus * planner.rate_per_second(g, settings.price_tier, settings.gpu_prices)
            for g in pool
        ]
    except planner.UnknownGpuType as e:
        raise InvalidInput(f"gpu_type: {e}") from None
    if settings.is_local_endpoint or _is_loopback(settings.gpu_cluster_api_url):
        return Pricing(LOCAL_GPU, LOCAL_TIER, rates[0], gpu, rates[0], rates[0], (gpu,), gpus)
    return Pricing(gpu, settings.price_tier, rates[0], gpu, min(rates), max(rates), pool, gpus)


def rate_of(job_tier: str, gpu: str, settings: Settings) -> float:
    """$/s of `gpu` on `job_tier` (a job's recorded tier) under the settings' prices."""
    tier = job_tier if job_tier in ("flex", "active") else settings.price_tier
    return planner.rate_per_second(gpu, tier, settings.gpu_prices)


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def device_for(settings: Settings, pricing: Pricing) -> str:
    """The worker's device: this machine's configured device locally, else CUDA."""
    return settings.local_device if pricing.is_local else "cuda"


def worker_model(settings: Settings, model: str, pricing: Pricing) -> str:
    """What the worker is told to load. On the local endpoint the tiny demo model's id means
    its folder under the data directory (built there on first use, as `brightrun up` does
    for the local inference server); everything else is passed as given."""
    from core.planner import TINY_DIR_NAME, TINY_ID

    if not pricing.is_local or model.lower() != TINY_ID:
        return model
    folder = (settings.data_dir / "models" / TINY_DIR_NAME).resolve()
    if not (folder / "config.json").is_file():
        from trainer.shared.tiny import build_tiny_chat_model

        build_tiny_chat_model(folder, seed=0)
    return str(folder)


def execution_limits(
    budget: float, rate_per_s: float, cap_s: float | None = None
) -> planner.ExecutionLimits:
    """`core.planner.execution_limits`, a budget under a minute of GPU being `InvalidInput`."""
    try:
        return planner.execution_limits(budget, rate_per_s, max_s=cap_s)
    except planner.BudgetTooSmall as e:
        raise InvalidInput(f"budget: {e}") from None


def trainer_endpoint(settings: Settings, gpus: int) -> str | None:
    """The endpoint a job on `gpus` GPUs goes to (None: the configured one, which serves
    one-GPU jobs, and any count on the local endpoint or any endpoint on loopback); `InvalidInput` when no endpoint
    has workers with that many GPUs."""
    if gpus <= 1 or settings.is_local_endpoint or _is_loopback(settings.gpu_cluster_api_url):
        return None
    url = settings.gpu_cluster_api_urls.get(str(gpus))
    if not url:
        have = ", ".join(sorted(settings.gpu_cluster_api_urls, key=int)) or "none"
        raise InvalidInput(
            f"no trainer endpoint has workers with {gpus} GPUs (GPU_CLUSTER_API_URLS has: "
            f"{have}): run `brightrun deploy --gpu-count {gpus}` (keeping the counts in use), "
            "or train on one GPU"
        )
    return url
