"""Plans past one GPU: memory per GPU with sharding, the smallest count that fits, time and
cost for that count (`trainer.shared.parallel` is what the worker does with `gpus`).

`per_gpu_memory(spec, model, gpus)` is `estimate_memory` for one of `gpus` processes, term
by term, under the sharding `trainer.shared.parallel.choose` picks for the spec (the same
rule the worker applies, from the base's weight bytes as loaded: an NF4 base's at 4 bits):

- parameters: with `fsdp` the linear layers', experts' and small weights are divided by
  the count (an NF4 base's packed 4-bit weights too); the embeddings and LM head are never
  sharded (the worker keeps them whole), nor are fused routed experts stored in NF4
  (`trainer.moe` keeps them in buffers, which FSDP2 does not shard); with `ddp` every GPU
  holds the whole base.
- LoRA weights, gradients and optimizer state: divided by the count (FSDP2 shards them
  under both strategies).
- activations, the loss and the CUDA context: unchanged (each GPU runs whole
  micro-batches of `micro_batch_size` rows).
- communication buffers (a new term): `fsdp` gathers a layer's weights whole for its
  forward and backward while prefetching the next, so two layers' weights, plus their
  LoRA gradients before the reduce-scatter; `ddp` the same for the LoRA weights only;
  and NCCL's own buffers (`NCCL_BUFFER_BYTES`, an allowance for its per-peer channels).
- allocator headroom: 8% of the rest, as for one GPU.

`counts(...)` gives, for each GPU type, the smallest count from 1 to `MAX_GPUS` whose
per-GPU memory fits (`fit.verdict_for` says "fits"), or none; with token statistics its
time (one GPU's tokens/s x count x `SCALING_EFFICIENCY` of the strategy; one GPU: as
`estimate_time`) and cost (count x the per-GPU rate x billed seconds). `cheapest(...)`
picks the option to recommend: the lowest high cost estimate, else the lowest rate for
the count. Pure functions; nothing raised beyond what `estimate_memory` raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.planner.budget import CostEstimate, estimate_cost
from core.planner.facts import ModelFacts
from core.planner.fit import device_bytes, verdict_for
from core.planner.memory import ALLOCATOR_HEADROOM, GIB, MemoryEstimate, MemoryTerm, estimate_memory
from core.planner.pricing import GPU_TYPES, GpuType, gpu_type
from core.planner.timing import TimeEstimate, TokenStats, estimate_time
from core.planner.trainer_facts import TrainerFacts
from trainer.shared.parallel import MAX_GPUS, choose
from trainer.shared.spec import JobSpec

SHARDED_WEIGHTS = ("base_weights", "routed_experts", "other_weights")
LORA_STATE = ("lora_weights", "lora_grads", "optimizer")
NCCL_BUFFER_BYTES = 512 << 20
# Share of linear scaling a job keeps per GPU: ddp only reduces LoRA gradients; fsdp also
# gathers every layer's weights twice a step (overlapped with compute, not entirely).
SCALING_EFFICIENCY = {"single": 1.0, "ddp": 0.92, "fsdp": 0.85}


def sharding(
    spec: JobSpec, model: ModelFacts, gpus: int, trainer: TrainerFacts | None = None
) -> tuple[str, str]:
    """(`single` | `fsdp` | `ddp`, why) for `spec` on `gpus` GPUs (the worker's rule)."""
    one = estimate_memory(spec, model, trainer)
    base = sum(one.term(k) for k in (*SHARDED_WEIGHTS, "embeddings"))
    return choose(gpus, spec.sharding, spec.quantization, base)


def per_gpu_memory(
    spec: JobSpec, model: ModelFacts, gpus: int, trainer: TrainerFacts | None = None
) -> MemoryEstimate:
    """Peak memory of one of `gpus` GPUs, term by term (see the module docstring)."""
    one = estimate_memory(spec, model, trainer)
    if gpus <= 1:
        return one
    strategy, why = sharding(spec, model, gpus, trainer)
    layers = max(len(model.layer_types), 1)
    sharded = set(SHARDED_WEIGHTS) if strategy == "fsdp" else set()
    if one.experts_quantized and model.fused_experts:  # trainer.moe's NF4 buffers
        sharded.discard("routed_experts")
    terms: list[MemoryTerm] = []
    for t in one.terms:
        if t.key == "headroom":
            continue
        if t.key in LORA_STATE or t.key in sharded:
            t = replace(
                t, bytes=t.bytes // gpus, detail=f"{t.detail}; 1/{gpus} per GPU ({strategy})"
            )
        elif t.key == "routed_experts" and strategy == "fsdp":
            t = replace(t, detail=f"{t.detail}; whole on every GPU (NF4 buffers, not sharded)")
        terms.append(t)
    gathered = one.term("lora_weights") + one.term("lora_grads")
    gathered += sum(one.term(k) for k in sharded)
    layer_bytes = 2 * gathered // layers
    terms.append(
        MemoryTerm(
            "communication",
            "Communication buffers",
            layer_bytes + NCCL_BUFFER_BYTES,
            f"two layers gathered whole ({layer_bytes / GIB:.2f} GiB: the one computing and the "
            f"next, prefetched) and NCCL's buffers ({NCCL_BUFFER_BYTES / GIB:.2f} GiB)",
        )
    )
    subtotal = sum(t.bytes for t in terms if t.key != "cuda_context")
    terms.append(
        MemoryTerm(
            "headroom",
            "Allocator headroom",
            int(ALLOCATOR_HEADROOM * subtotal),
            f"{ALLOCATOR_HEADROOM:.0%} of the above: fragmentation and cached blocks",
        )
    )
    note = f"{gpus} GPUs, {strategy}: {why}"
    return replace(
        one,
        terms=tuple(terms),
        total_bytes=sum(t.bytes for t in terms),
        notes=(*one.notes, note),
    )


@dataclass(frozen=True)
class GpuCount:
    """The smallest count of one GPU type that fits the job, and what it takes."""

    gpu: str
    name: str
    count: int | None  # None: not even MAX_GPUS fit
    sharding: str
    reason: str
    memory: MemoryEstimate  # per GPU, at `count` (at MAX_GPUS when none fits)
    memory_bytes: int  # the device's
    time: TimeEstimate | None = None
    cost: CostEstimate | None = None  # for all `count` GPUs

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "name": self.name,
            "count": self.count,
            "sharding": self.sharding,
            "reason": self.reason,
            "need_bytes_per_gpu": self.memory.total_bytes,
            "memory_bytes": self.memory_bytes,
            "terms": [t.__dict__ for t in self.memory.terms],
            "time": self.time.to_dict() if self.time else None,
            "cost": self.cost.to_dict() if self.cost else None,
        }


def scaled_time(one: TimeEstimate, gpus: int, strategy: str) -> TimeEstimate:
    """One GPU's time estimate on `gpus` of them (see the module docstring)."""
    if gpus <= 1:
        return one
    speedup = gpus * SCALING_EFFICIENCY[strategy]
    return replace(
        one,
        tokens_per_s=one.tokens_per_s * speedup,
        seconds=one.seconds / speedup,
        seconds_low=one.seconds_low / speedup,
        seconds_high=one.seconds_high / speedup,
        sampling_seconds=one.sampling_seconds / speedup,  # each rank samples its micro-batches
    )


def scaled_cost(
    time: TimeEstimate, gpus: int, tier: str, overrides: Mapping[str, float] | None
) -> CostEstimate:
    """`gpus` GPUs billed for the job's time: count x the per-GPU rate."""
    one = estimate_cost(time, tier, overrides)
    return replace(
        one,
        rate_per_s=one.rate_per_s * gpus,
        usd_low=one.usd_low * gpus,
        usd_high=one.usd_high * gpus,
    )


def counts(
    spec: JobSpec,
    model: ModelFacts,
    *,
    tokens: TokenStats | None = None,
    gpus: Sequence[str] | None = None,
    measured: Mapping[str, Sequence[float]] | None = None,
    trainer: TrainerFacts | None = None,
    tier: str = "flex",
    price_overrides: Mapping[str, float] | None = None,
) -> tuple[GpuCount, ...]:
    """Per GPU type: the smallest count that fits, with time and cost (module docstring)."""
    table: Mapping[str, GpuType] = {g: gpu_type(g) for g in gpus} if gpus else GPU_TYPES
    out = []
    for g in table.values():
        count, memory = None, None
        for n in range(1, MAX_GPUS + 1):
            memory = per_gpu_memory(spec, model, n, trainer)
            if verdict_for(memory.total_bytes, g) == "fits":
                count = n
                break
        assert memory is not None
        strategy, why = sharding(spec, model, count or MAX_GPUS, trainer)
        time = cost = None
        if tokens is not None and count is not None:
            one = estimate_time(spec, model, g.id, tokens, (measured or {}).get(g.id, ()))
            time = scaled_time(one, count, strategy)
            cost = scaled_cost(time, count, tier, price_overrides)
        out.append(
            GpuCount(g.id, g.name, count, strategy, why, memory, device_bytes(g), time, cost)
        )
    return tuple(out)


def cheapest(options: Sequence[GpuCount]) -> GpuCount | None:
    """The option to recommend: lowest high cost, else lowest rate for its count."""
    usable = [o for o in options if o.count is not None]
    if not usable:
        return None
    if all(o.cost is not None for o in usable):
        return min(usable, key=lambda o: o.cost.usd_high)  # type: ignore[union-attr]
    return min(usable, key=lambda o: gpu_type(o.gpu).flex_per_s * (o.count or 1))
