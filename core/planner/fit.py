"""Does a job fit a GPU, and what would make it fit.

Verdict per GPU (`fit_verdicts`): fits when the peak (`core.planner.memory`) is at most 90%
of the device memory as the driver reports it, tight up to 100%, does not fit above; each
non-fitting verdict gets a suggestion that is checked to fit (nf4, gradient checkpointing,
micro-batch 1 with more accumulation, LoRA off the experts, a shorter max length, else a
bigger GPU). `oom_suggestion` is one step of the same ladder for a job that ran out of
memory anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.errors import InvalidInput
from core.planner.facts import ModelFacts
from core.planner.memory import MemoryEstimate, estimate_memory
from core.planner.pricing import DRIVER_MEMORY_MIB, GPU_TYPES, GpuType
from core.planner.trainer_facts import TrainerFacts
from trainer.shared.spec import JobSpec

FIT_FRACTION = 0.90  # above this share of the device: tight

Verdict = Literal["fits", "tight", "does_not_fit"]


@dataclass(frozen=True)
class GpuVerdict:
    gpu: str
    name: str
    memory_bytes: int
    need_bytes: int
    verdict: Verdict
    suggestion: str | None = None
    suggested: dict[str, Any] | None = None  # the settings that make it fit

    @property
    def a_name(self) -> str:
        """The name after its article, read letter by letter: "an A40 48 GB", "a T4"."""
        return f"{'an' if self.name[:1].upper() in 'AEFHILMNORSX' else 'a'} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_bytes(g: GpuType) -> int:
    """Memory of the device as the CUDA driver reports it (falls back to the label)."""
    mib = DRIVER_MEMORY_MIB.get(g.id)
    return mib * 2**20 if mib else int(g.memory_gb * 1e9)


def verdict_for(need: int, g: GpuType) -> Verdict:
    have = device_bytes(g)
    if need <= FIT_FRACTION * have:
        return "fits"
    return "tight" if need <= have else "does_not_fit"


def _with(spec: JobSpec, **changes: Any) -> JobSpec:
    training = {k: v for k, v in changes.items() if k in type(spec.training).model_fields}
    lora = {k: v for k, v in changes.items() if k in type(spec.lora).model_fields}
    top = {k: v for k, v in changes.items() if k in ("quantization",)}
    return spec.model_copy(
        update={
            **top,
            "training": spec.training.model_copy(update=training),
            "lora": spec.lora.model_copy(update=lora),
        }
    )


def _fits(spec: JobSpec, model: ModelFacts, g: GpuType, trainer: TrainerFacts) -> bool:
    try:
        return verdict_for(estimate_memory(spec, model, trainer).total_bytes, g) == "fits"
    except InvalidInput:
        return False


def _ladder(
    spec: JobSpec, model: ModelFacts, g: GpuType, trainer: TrainerFacts
) -> tuple[str, dict[str, Any]] | None:
    """The planner's settings ladder, applied cumulatively until the job fits `g`."""
    steps: list[tuple[str, dict[str, Any]]] = []
    t = spec.training
    if spec.quantization != "nf4":
        steps.append(("4-bit (nf4)", {"quantization": "nf4"}))
    if spec.lora.lora_on_experts:
        steps.append(("LoRA off the routed experts", {"lora_on_experts": False}))
    if not t.gradient_checkpointing:
        steps.append(("gradient checkpointing", {"gradient_checkpointing": True}))
    if t.micro_batch_size > 1:
        steps.append(
            (
                f"micro-batch 1 with gradient accumulation "
                f"{t.grad_accum * t.micro_batch_size} (same effective batch)",
                {"micro_batch_size": 1, "grad_accum": t.grad_accum * t.micro_batch_size},
            )
        )
    current = spec
    said: list[str] = []
    changes: dict[str, Any] = {}
    for text, change in steps:
        current, changes = _with(current, **change), {**changes, **change}
        said.append(text)
        if _fits(current, model, g, trainer):
            return " + ".join(said), changes
    length = current.training.max_length
    while length > 256:
        length = max(256, length // 2)
        if _fits(_with(current, max_length=length), model, g, trainer):
            return " + ".join([*said, f"max length {length}"]), {**changes, "max_length": length}
    return None


def suggest(
    spec: JobSpec,
    model: ModelFacts,
    g: GpuType,
    trainer: TrainerFacts | None = None,
    gpus: Mapping[str, GpuType] | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """Settings that make the job fit `g` (nf4, LoRA off the experts, gradient checkpointing,
    micro-batch 1 with more accumulation, then halving the max length), else the cheapest
    bigger GPU of `gpus` (default: every type in the price table) it fits as it is, else a
    bigger GPU with lighter settings; None if nothing does."""
    trainer = trainer or TrainerFacts()
    here = _ladder(spec, model, g, trainer)
    if here:
        return here
    bigger = sorted(
        (o for o in (gpus or GPU_TYPES).values() if device_bytes(o) > device_bytes(g)),
        key=lambda o: (o.flex_per_s, device_bytes(o)),
    )
    for other in bigger:
        if _fits(spec, model, other, trainer):
            return f"a bigger GPU: {other.name}", {"gpu": other.id}
    for other in bigger:
        there = _ladder(spec, model, other, trainer)
        if there:
            return f"{there[0]} on a bigger GPU: {other.name}", {**there[1], "gpu": other.id}
    return None


def fit_verdicts(
    spec: JobSpec,
    model: ModelFacts,
    memory: MemoryEstimate | None = None,
    trainer: TrainerFacts | None = None,
    gpus: Mapping[str, GpuType] | None = None,
) -> list[GpuVerdict]:
    """fits / tight / does not fit on every GPU type, with a suggestion where it does not fit."""
    trainer = trainer or TrainerFacts()
    memory = memory or estimate_memory(spec, model, trainer)
    out = []
    for g in (gpus or GPU_TYPES).values():
        v = verdict_for(memory.total_bytes, g)
        s = suggest(spec, model, g, trainer) if v != "fits" else None
        out.append(
            GpuVerdict(
                gpu=g.id,
                name=g.name,
                memory_bytes=device_bytes(g),
                need_bytes=memory.total_bytes,
                verdict=v,
                suggestion=(
                    s[0]
                    if s
                    else (
                        "no setting BrightRun offers makes it fit one GPU"
                        if v == "does_not_fit"
                        else None
                    )
                ),
                suggested=s[1] if s else None,
            )
        )
    return out


def oom_suggestion(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """Lighter settings for a job (a `JobSpec` as a dict) that ran out of memory.

    One step of the planner's ladder, in order: gradient checkpointing on; 4-bit (nf4);
    half the micro-batch with twice the accumulation (same effective batch); half the max
    length (not below 256). Returns {"training": {...}, "quantization": ...} with the whole
    training section, or None when nothing lighter is left.
    """
    t = dict(spec.get("training") or {})
    quant = spec.get("quantization", "nf4")
    if not t.get("gradient_checkpointing", True):
        t["gradient_checkpointing"] = True
    elif quant != "nf4":
        quant = "nf4"
    elif int(t.get("micro_batch_size", 1)) > 1:
        mb = int(t["micro_batch_size"])
        t["micro_batch_size"] = mb // 2
        t["grad_accum"] = int(t.get("grad_accum", 1)) * mb // (mb // 2)
    elif int(t.get("max_length", 2048)) > 256:
        t["max_length"] = max(256, int(t["max_length"]) // 2)
    else:
        return None
    return {"training": t, "quantization": quant}
