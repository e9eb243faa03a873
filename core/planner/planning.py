"""The whole plan for one job: memory, a verdict per GPU type, and (with token statistics)
time and cost per GPU, with the GPU the planner recommends.

A spec with `gpus` > 1 is planned per GPU (`core.planner.multi_gpu`): its memory is one
GPU's under the sharding the worker will use, its times are for that many GPUs and its
costs count every GPU. Every plan also carries `gpu_counts`: for each GPU type the
smallest count that fits, with its sharding, time and cost, and `recommended_count`, the
cheapest of them (the one to launch with when the job fits no single GPU)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidInput
from core.planner.budget import CostEstimate, estimate_cost
from core.planner.facts import ModelFacts
from core.planner.fit import GpuVerdict, fit_verdicts
from core.planner.lora_params import lora_count
from core.planner.memory import MemoryEstimate
from core.planner.multi_gpu import (
    GpuCount,
    cheapest,
    counts,
    per_gpu_memory,
    scaled_cost,
    scaled_time,
    sharding,
)
from core.planner.pricing import GPU_TYPES, GpuType, gpu_type
from core.planner.timing import TimeEstimate, TokenStats, estimate_time
from core.planner.trainer_facts import TrainerFacts, capabilities
from trainer.shared.spec import JobSpec


@dataclass(frozen=True)
class Plan:
    model: ModelFacts
    settings: dict[str, Any]
    memory: MemoryEstimate
    verdicts: tuple[GpuVerdict, ...]
    times: tuple[TimeEstimate, ...]  # per GPU, when token statistics were given
    costs: tuple[CostEstimate, ...]
    recommended_gpu: str | None
    notes: tuple[str, ...]
    gpu_counts: tuple[GpuCount, ...] = ()  # per GPU type: the smallest count that fits
    recommended_count: GpuCount | None = None  # the cheapest of them

    def verdict(self, gpu: str) -> GpuVerdict:
        for v in self.verdicts:
            if v.gpu == gpu:
                return v
        raise InvalidInput(f"unknown GPU type {gpu!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "settings": self.settings,
            "memory": self.memory.to_dict(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "times": [t.to_dict() for t in self.times],
            "costs": [c.to_dict() for c in self.costs],
            "recommended_gpu": self.recommended_gpu,
            "notes": list(self.notes),
            "gpus": self.settings.get("gpus", 1),
            "gpu_counts": [c.to_dict() for c in self.gpu_counts],
            "recommended_count": (
                {"gpu": self.recommended_count.gpu, "count": self.recommended_count.count}
                if self.recommended_count
                else None
            ),
        }


def plan(
    spec: JobSpec,
    model: ModelFacts,
    *,
    tokens: TokenStats | None = None,
    gpus: Sequence[str] | None = None,
    measured: Mapping[str, Sequence[float]] | None = None,
    trainer: TrainerFacts | None = None,
    tier: str = "flex",
    price_overrides: Mapping[str, float] | None = None,
) -> Plan:
    """Memory, verdict per GPU type, and (with token statistics) time and cost per GPU.

    `measured` maps a GPU type id to tokens/s that finished jobs of this model achieved on it.
    """
    trainer = trainer or TrainerFacts()
    table = {g: gpu_type(g) for g in gpus} if gpus else dict(GPU_TYPES)
    n = spec.gpus
    memory = per_gpu_memory(spec, model, n, trainer)
    strategy = sharding(spec, model, n, trainer)[0]
    verdicts = fit_verdicts(spec, model, memory, trainer, table)
    times: list[TimeEstimate] = []
    costs: list[CostEstimate] = []
    if tokens is not None:
        for gid in table:
            tm = estimate_time(spec, model, gid, tokens, (measured or {}).get(gid, ()))
            if n > 1:
                tm = scaled_time(tm, n, strategy)
            times.append(tm)
            costs.append(
                scaled_cost(tm, n, tier, price_overrides)
                if n > 1
                else estimate_cost(tm, tier, price_overrides)
            )
    options = counts(
        spec,
        model,
        tokens=tokens,
        gpus=list(table),
        measured=measured,
        trainer=trainer,
        tier=tier,
        price_overrides=price_overrides,
    )
    return Plan(
        model,
        _settings(spec, model, trainer, memory),
        memory,
        tuple(verdicts),
        tuple(times),
        tuple(costs),
        _recommended(verdicts, costs, table),
        memory.notes,
        options,
        cheapest(options),
    )


def _recommended(
    verdicts: list[GpuVerdict], costs: list[CostEstimate], table: Mapping[str, GpuType]
) -> str | None:
    """The cheapest GPU the job fits (else is tight on): by high cost estimate, else rate."""
    usable = [v.gpu for v in verdicts if v.verdict == "fits"] or [
        v.gpu for v in verdicts if v.verdict == "tight"
    ]
    if not usable:
        return None
    if costs:
        by_gpu = {c.gpu: c for c in costs}
        return min(usable, key=lambda gid: by_gpu[gid].usd_high)
    return min(usable, key=lambda gid: table[gid].flex_per_s)


def _settings(
    spec: JobSpec, model: ModelFacts, trainer: TrainerFacts, memory: MemoryEstimate
) -> dict[str, Any]:
    """The settings the plan was made for, as the trainer will apply them."""
    lc = lora_count(spec, model, trainer)
    return {
        "quantization": spec.quantization,
        "lora_r": spec.lora.r,
        "lora_targets": lc.target_modules,
        "lora_on_experts": spec.lora.lora_on_experts,
        "lora_params": lc.params,
        "micro_batch_size": spec.training.micro_batch_size,
        "grad_accum": spec.training.grad_accum,
        "max_length": spec.training.max_length,
        "gradient_checkpointing": spec.training.gradient_checkpointing,
        "packing": capabilities(model).packing if spec.training.packing else "padded",
        "experts_quantized": memory.experts_quantized,
        "gpus": spec.gpus,
        "sharding": sharding(spec, model, spec.gpus, trainer)[0],
    }
