"""What a job runs on and what it is billed at.

`pricing_for(settings, gpu_type)`: the GPU type and Serverless rate of a new job. Jobs on
the local endpoint (or any endpoint on loopback) run on this machine's CPU but are priced
at the configured GPU type's rate, recorded as GPU type `LOCAL_CPU`, tier `local`.
`execution_limits(budget, rate, cap_s)`: the platform's and the worker's time limits for
a budget (`core.planner.execution_limits`), a budget under a minute being `InvalidInput`.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    @property
    def is_local(self) -> bool:
        return self.gpu_type == LOCAL_GPU

    @property
    def note(self) -> str:
        if self.is_local:
            return (
                f"runs on this machine's CPU, priced at {self.priced_as} Serverless rates "
                f"(${self.rate_per_s * 3600:.2f}/h) as if it had run there"
            )
        return f"{self.priced_as} Serverless {self.tier} at ${self.rate_per_s * 3600:.2f}/h"


def pricing_for(settings: Settings, gpu_type: str | None = None) -> Pricing:
    """The GPU type and rate a new job is billed at under `settings`."""
    gpu = gpu_type or settings.gpu_type
    try:
        rate = planner.rate_per_second(gpu, settings.price_tier, settings.gpu_prices)
    except planner.UnknownGpuType as e:
        raise InvalidInput(f"gpu_type: {e}") from None
    if settings.is_local_endpoint or _is_loopback(settings.gpu_cluster_api_url):
        return Pricing(LOCAL_GPU, LOCAL_TIER, rate, gpu)
    return Pricing(gpu, settings.price_tier, rate, gpu)


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
