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
from dataclasses import dataclass
from typing import Literal

Tier = Literal["flex", "active", "pod"]


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
        GpuType("A6000_48GB", "RTX A6000 48 GB", 48, 154.8, 0.00034, 0.00024, 0.49, "AMPERE_48", True),
        GpuType("L40S_48GB", "L40S 48 GB", 48, 362.1, 0.00053, 0.00037, 0.86, "ADA_48_PRO", True),
        GpuType("A100_80GB", "A100 80 GB", 80, 312.0, 0.00076, 0.00060, 1.19, "AMPERE_80"),
        GpuType("H100_80GB_PCIE", "H100 PCIe 80 GB", 80, 756.0, 0.00116, 0.00093, 1.99, "ADA_80_PRO"),
        GpuType("H100_80GB_SXM", "H100 SXM 80 GB", 80, 989.4, 0.00116, 0.00093, 2.69, "ADA_80_PRO"),
        GpuType("H200_141GB", "H200 141 GB", 141, 989.4, 0.00155, 0.00124, 3.59, "HOPPER_141", True),
    )
}

# The local endpoint runs on this machine's CPU; it is priced at zero.
LOCAL_CPU = GpuType("LOCAL_CPU", "local CPU", 0, 0.5, 0.0, 0.0, 0.0, "LOCAL")


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


def rate_per_second(gpu_id: str, tier: Tier = "flex", overrides: dict[str, float] | None = None) -> float:
    """$/s for `gpu_id` on `tier`. An override ($/hour) replaces the flex rate and the pod rate."""
    g = gpu_type(gpu_id)
    if overrides and gpu_id in overrides:
        return overrides[gpu_id] / 3600.0
    if tier == "flex":
        return g.flex_per_s
    if tier == "active":
        return g.active_per_s
    return g.pod_per_h / 3600.0


def billed_seconds(execution_ms: int | float, delay_ms: int | float = 0, cold_start_ms: int | float = 0) -> int:
    """Seconds RunPod bills: the worker's run time (cold start included), rounded up.

    `delayTime` is queue time plus cold start; only the cold-start part is billed, and it is
    reported separately by the worker (`cold_start_ms`), so `delay_ms` is not billed here.
    """
    del delay_ms
    return math.ceil(max(0.0, (execution_ms + cold_start_ms) / 1000.0))
