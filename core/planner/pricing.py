"""GPU types, their prices, and what work costs on them.

Prices are defaults that settings can override (`GPU_PRICES`, $/hour per GPU type id).
Serverless rates are RunPod's published per-second rates (docs.runpod.io/serverless/pricing,
read 2026-11-26): flex workers scale to zero, active workers run 24/7 at a discount. Pod
rates are RunPod on-demand Community Cloud $/hour (runpod.io/pricing, as transcribed on
2026-11-09); the L40S, A40 and A6000 pod rates are approximate and marked so.

RunPod bills a Serverless worker from the moment it starts until it stops, rounded up to
the second, cold start included; that is the billed time used everywhere here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Tier = Literal["flex", "active", "pod"]


PRICES_READ_ON = "2026-11-26"  # when the Serverless rates below were read


@dataclass(frozen=True)
class GpuType:
    id: str
    name: str
    memory_gb: float  # usable device memory, GB (1e9 bytes)
    bf16_tflops: float  # dense bf16 tensor-core peak
    flex_per_s: float  # RunPod Serverless flex, $/s
    active_per_s: float  # RunPod Serverless active, $/s
    pod_per_h: float  # RunPod on-demand pod, $/h
    runpod_pool: str  # the Serverless GPU pool id an endpoint asks for
    pod_price_approximate: bool = False


GPU_TYPES: dict[str, GpuType] = {
    g.id: g
    for g in (
        GpuType("A40_48GB", "A40 48 GB", 48, 149.7, 0.00034, 0.00024, 0.40, "AMPERE_48", True),
        GpuType(
            "A6000_48GB", "RTX A6000 48 GB", 48, 154.8, 0.00034, 0.00024, 0.49, "AMPERE_48", True
        ),
        GpuType("L40S_48GB", "L40S 48 GB", 48, 362.1, 0.00053, 0.00037, 0.86, "ADA_48_PRO", True),
        GpuType("A100_80GB", "A100 80 GB", 80, 312.0, 0.00076, 0.00060, 1.19, "AMPERE_80"),
        GpuType(
            "H100_80GB_PCIE", "H100 PCIe 80 GB", 80, 756.0, 0.00116, 0.00093, 1.99, "ADA_80_PRO"
        ),
        GpuType("H100_80GB_SXM", "H100 SXM 80 GB", 80, 989.4, 0.00116, 0.00093, 2.69, "ADA_80_PRO"),
        GpuType(
            "H200_141GB", "H200 141 GB", 141, 989.4, 0.00155, 0.00124, 3.59, "HOPPER_141", True
        ),
    )
}

# Device memory as the CUDA driver reports it (nvidia-smi "Total", MiB; ECC on where the
# card ships with it on). The planner compares peak memory with this, not the label.
DRIVER_MEMORY_MIB: dict[str, int] = {
    "A40_48GB": 46068,
    "A6000_48GB": 48685,
    "L40S_48GB": 46068,
    "A100_80GB": 81920,
    "H100_80GB_PCIE": 81559,
    "H100_80GB_SXM": 81559,
    "H200_141GB": 143771,
}

# The local endpoint runs on this machine's CPU; it is priced at zero.
LOCAL_CPU = GpuType("LOCAL_CPU", "local CPU", 0, 0.5, 0.0, 0.0, 0.0, "LOCAL")

# Peak device-memory bandwidth, GB/s (1e9 bytes), from NVIDIA's datasheets: A40 696,
# RTX A6000 768, L40S 864 (GDDR6); A100 80GB PCIe 1,935 (the SXM card's 2,039 is higher:
# the pool holds both, the lower is used); H100 PCIe 2,000 (HBM2e), H100 SXM 3,350 (HBM3),
# H200 4,800 (HBM3e). LOCAL_CPU: an assumed 20 GB/s, the order of a laptop's dual-channel
# DDR memory. Decoding (a generating method's sampling, `core.planner.timing`) is bound
# by it.
MEMORY_BANDWIDTH_GB_S: dict[str, float] = {
    "A40_48GB": 696.0,
    "A6000_48GB": 768.0,
    "L40S_48GB": 864.0,
    "A100_80GB": 1935.0,
    "H100_80GB_PCIE": 2000.0,
    "H100_80GB_SXM": 3350.0,
    "H200_141GB": 4800.0,
    LOCAL_CPU.id: 20.0,
}


# CUDA device names (`torch.cuda.get_device_name`) to GPU type ids, the first match wins.
_DEVICE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bH200\b", "H200_141GB"),
    (r"\bH100\b.*\b(PCIe|NVL)\b", "H100_80GB_PCIE"),
    (r"\bH100\b", "H100_80GB_SXM"),
    (r"\bA100\b.*80\s*GB", "A100_80GB"),
    (r"\bL40S\b", "L40S_48GB"),
    (r"\bRTX A6000\b", "A6000_48GB"),
    (r"\bA40\b", "A40_48GB"),
)


def gpu_type_for_device(device_name: str | None) -> str | None:
    """The GPU type id of a CUDA device name the worker reported ("NVIDIA A40",
    "NVIDIA H100 80GB HBM3", ...); None for a device the table does not price."""
    for pattern, gpu_id in _DEVICE_PATTERNS:
        if device_name and re.search(pattern, device_name, re.IGNORECASE):
            return gpu_id
    return None


def pool_gpu_types(pools: tuple[str, ...] | list[str]) -> list[str]:
    """Every GPU type id of the table that RunPod may pick for an endpoint asking `pools`."""
    return [g.id for g in GPU_TYPES.values() if g.runpod_pool in pools]


class UnknownGpuType(ValueError):
    """A GPU type id that is not in the table."""


def gpu_type(gpu_id: str) -> GpuType:
    if gpu_id == LOCAL_CPU.id:
        return LOCAL_CPU
    try:
        return GPU_TYPES[gpu_id]
    except KeyError:
        raise UnknownGpuType(
            f"unknown GPU type {gpu_id!r}; known: {', '.join(sorted(GPU_TYPES))}"
        ) from None


def rate_per_second(
    gpu_id: str, tier: Tier = "flex", overrides: dict[str, float] | None = None
) -> float:
    """$/s for `gpu_id` on `tier`. An override ($/hour) replaces the flex rate and the pod rate."""
    g = gpu_type(gpu_id)
    if overrides and gpu_id in overrides:
        return overrides[gpu_id] / 3600.0
    if tier == "flex":
        return g.flex_per_s
    if tier == "active":
        return g.active_per_s
    return g.pod_per_h / 3600.0


def billed_seconds(
    execution_ms: int | float, delay_ms: int | float = 0, cold_start_ms: int | float = 0
) -> int:
    """Seconds RunPod bills: the worker's run time (cold start included), rounded up.

    `delayTime` is queue time plus cold start; only the cold-start part is billed, and it is
    reported separately by the worker (`cold_start_ms`), so `delay_ms` is not billed here.
    """
    del delay_ms
    return math.ceil(max(0.0, (execution_ms + cold_start_ms) / 1000.0))


# --- what work costs --------------------------------------------------------------------
#
# Everything below is a pure function of its arguments (no settings, no database), so the
# jobs module, the dashboard and the tests share one arithmetic.

MIN_BUDGET_GPU_S = 60.0  # a job budget must buy at least one minute of GPU time


def job_cost_usd(billed_s: float, rate_per_s: float) -> float:
    """Dollars for `billed_s` billed seconds at `rate_per_s`."""
    return max(0.0, billed_s) * max(0.0, rate_per_s)


def live_cost_usd(elapsed_s: float, rate_per_s: float) -> float:
    """What a running job has cost so far: seconds since its worker started × rate."""
    return job_cost_usd(math.ceil(max(0.0, elapsed_s)), rate_per_s)


@dataclass(frozen=True)
class ExecutionLimits:
    """How a dollar budget becomes time limits for one job.

    `execution_timeout_ms` is RunPod's `policy.executionTimeout`: the platform kills the job
    when it is reached, so spend can never pass the budget, even with no dashboard open.
    `time_limit_s` is the worker's own training time limit, below it: the worker stops
    there, saves and uploads what it trained, and ends as completed. The gap between the
    two (`reserve_s`) pays for cold start, model loading, saving and uploading.
    """

    budget_usd: float
    rate_per_s: float
    budget_s: float
    execution_timeout_ms: int
    time_limit_s: float
    reserve_s: float


class BudgetTooSmall(ValueError):
    """A budget that buys less than `MIN_BUDGET_GPU_S` of GPU time."""


def execution_limits(
    budget_usd: float,
    rate_per_s: float,
    *,
    max_s: float | None = None,
    reserve_fraction: float = 0.25,
    min_reserve_s: float = 30.0,
    max_reserve_s: float = 900.0,
) -> ExecutionLimits:
    """Turn `budget_usd` at `rate_per_s` into the job's hard and soft time limits.

    The hard limit is the seconds the budget buys, or `max_s` when that is shorter (the
    planner's "a job running this long is stuck" bound). reserve = clamp(reserve_fraction ×
    hard limit, min_reserve_s, max_reserve_s), at most half of it; the worker trains for the
    rest. Raises `BudgetTooSmall` when the budget buys under a minute, `ValueError` for a
    non-positive rate.
    """
    if rate_per_s <= 0:
        raise ValueError(f"the GPU rate must be positive to derive a time limit (got {rate_per_s})")
    budget_s = budget_usd / rate_per_s
    if budget_s < MIN_BUDGET_GPU_S:
        raise BudgetTooSmall(
            f"a budget of ${budget_usd:.2f} buys {budget_s:.0f} s of GPU at "
            f"${rate_per_s * 3600:.2f}/h; give at least ${MIN_BUDGET_GPU_S * rate_per_s:.2f} "
            "(one minute)"
        )
    hard_s = min(budget_s, max_s) if max_s is not None else budget_s
    hard_s = max(hard_s, MIN_BUDGET_GPU_S)
    reserve = min(max(reserve_fraction * hard_s, min_reserve_s), max_reserve_s, hard_s / 2)
    return ExecutionLimits(
        budget_usd=budget_usd,
        rate_per_s=rate_per_s,
        budget_s=budget_s,
        execution_timeout_ms=int(hard_s * 1000),
        time_limit_s=hard_s - reserve,
        reserve_s=reserve,
    )


# --- aggregations over cost records ------------------------------------------------------


@dataclass(frozen=True)
class SpendTotal:
    usd: float
    seconds: float
    records: int


def aggregate_spend(
    records, by: Literal["owner_id", "month", "gpu_type", "job_id"]
) -> dict[str, SpendTotal]:
    """Sum cost records (objects or mappings with `owner_id`, `month`, `gpu_type`, `job_id`,
    `usd`, `seconds`, e.g. `core.db.tables.CostRecord` rows) per user, month, GPU type or job.
    Keys come back sorted."""
    sums: dict[str, list[float]] = {}
    for rec in records:
        get = rec.get if isinstance(rec, dict) else lambda k, r=rec: getattr(r, k)
        key = str(get(by))
        acc = sums.setdefault(key, [0.0, 0.0, 0])
        acc[0] += float(get("usd"))
        acc[1] += float(get("seconds"))
        acc[2] += 1
    return {
        k: SpendTotal(usd=v[0], seconds=v[1], records=int(v[2])) for k, v in sorted(sums.items())
    }


# --- Serverless against an always-on pod --------------------------------------------------


@dataclass(frozen=True)
class PodComparison:
    """The same GPU work on Serverless (billed only while busy) and on always-on pods
    (billed while on). Work of more busy hours than the period has needs several pods at
    once (jobs ran side by side): `pods` of them, each on `pod_hours_on`."""

    busy_hours: float
    pod_hours_on: float
    serverless_rate_h: float
    pod_rate_h: float
    serverless_usd: float
    pod_usd: float
    pods: int = 1

    @property
    def utilisation(self) -> float:
        on = self.pod_hours_on * self.pods
        return self.busy_hours / on if on else 0.0

    @property
    def savings_usd(self) -> float:
        return self.pod_usd - self.serverless_usd

    @property
    def break_even_utilisation(self) -> float:
        """Utilisation above which the pod is cheaper (pod rate ÷ Serverless rate)."""
        return self.pod_rate_h / self.serverless_rate_h if self.serverless_rate_h else math.inf


def pods_needed(busy_hours: float, hours_on: float) -> int:
    """Always-on pods it takes to do `busy_hours` of work in `hours_on` (at least one)."""
    if hours_on <= 0:
        raise ValueError(f"pods must be on for a positive time (got {hours_on} h)")
    return max(1, math.ceil(busy_hours / hours_on - 1e-9))


def serverless_vs_pod(
    busy_hours: float,
    *,
    serverless_rate_h: float,
    pod_rate_h: float,
    pod_hours_on: float | None = None,
    utilisation: float | None = None,
    pods: int = 1,
) -> PodComparison:
    """Cost `busy_hours` of work both ways. Give how long the pods stay on, or their
    utilisation (busy ÷ on); e.g. 2 h of training with a pod left on 24 h at $1.99/h is
    $47.76, against $6.70 on Serverless at $3.35/h."""
    if (pod_hours_on is None) == (utilisation is None):
        raise ValueError("give exactly one of pod_hours_on or utilisation")
    if pods < 1:
        raise ValueError(f"pods must be at least 1 (got {pods})")
    if utilisation is not None:
        if not 0 < utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1] (got {utilisation})")
        pod_hours_on = busy_hours / utilisation / pods
    assert pod_hours_on is not None
    if pod_hours_on * pods < busy_hours:
        raise ValueError(f"{pods} pod(s) on for {pod_hours_on} h cannot do {busy_hours} h of work")
    return PodComparison(
        busy_hours=busy_hours,
        pod_hours_on=pod_hours_on,
        serverless_rate_h=serverless_rate_h,
        pod_rate_h=pod_rate_h,
        serverless_usd=busy_hours * serverless_rate_h,
        pod_usd=pods * pod_hours_on * pod_rate_h,
        pods=pods,
    )


def compare_for_gpu(
    gpu_id: str,
    busy_hours: float,
    *,
    tier: Tier = "flex",
    pod_hours_on: float | None = None,
    utilisation: float | None = None,
    overrides: dict[str, float] | None = None,
    pods: int = 1,
) -> PodComparison:
    """`serverless_vs_pod` with the table's rates for `gpu_id` (Serverless `tier` vs pod)."""
    return serverless_vs_pod(
        busy_hours,
        serverless_rate_h=rate_per_second(gpu_id, tier, overrides) * 3600,
        pod_rate_h=rate_per_second(gpu_id, "pod") * 3600,
        pod_hours_on=pod_hours_on,
        utilisation=utilisation,
        pods=pods,
    )
