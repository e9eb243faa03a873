"""How BrightRun's trainer runs a job beyond what the `JobSpec` says, as the planner sees it.

An explicit `TrainerFacts` field wins over `trainer/shared/arch.py` (the capability table the
worker reads); `None` fields are read from that table for the model's architecture. The
published anchors in the tests use explicit fields to describe other training stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.planner.facts import ModelFacts
from trainer.shared import arch

LOSS_CHUNK_ELEMENTS = 1 << 24  # trainer/kernels.py: logits computed 2^24 at a time


@dataclass(frozen=True)
class TrainerFacts:
    """How the trainer runs a job, beyond what the spec says. Defaults: BrightRun's trainer.

    `None` fields are read from `trainer/shared/arch.py` for the model's architecture.
    """

    experts_quantized: bool | None = None  # fused experts in NF4 under nf4 (ArchCaps)
    quantized_bits: float | None = None  # bits per quantised weight (arch.bits_per_param)
    upcast_unquantized_fp32: bool = True  # prepare_model_for_kbit_training on 4/8-bit loads
    adapter_bytes: float = 4.0  # LoRA weights, fp32
    grad_bytes: float = 4.0
    optimizer_bytes: float = 8.0  # torch AdamW: exp_avg + exp_avg_sq, fp32
    loss_chunk_elements: int | None = LOSS_CHUNK_ELEMENTS  # None: full logits
    # bytes per logit at the loss peak: logits, their fp32 copy, log-softmax and gradient
    logit_bytes: float = 12.0
    # None: arch.resolve_lora_targets(spec). A tuple/str here is passed to PEFT as is.
    lora_target_modules: tuple[str, ...] | str | None = None
    lora_target_parameters: tuple[str, ...] = ()
    # PEFT >= 0.18 with transformers >= 5 maps gate_proj/up_proj/down_proj/gate onto fused
    # expert parameters for qwen3_moe/qwen3_next. None: as the trainer does -- it turns that
    # off where trainer/shared/arch.py says the experts are fused (trainer.moe.peft_module_targets),
    # so those names adapt the shared expert.
    peft_remaps_expert_names: bool | None = None
    # transformers < 5 layout: one nn.Linear per expert (gate_proj/up_proj/down_proj), which
    # module names then match; for describing runs made with that stack.
    experts_are_linear_modules: bool = False
    # LoRA on every routed expert added by the trainer itself (trainer.moe) when the spec
    # asks for it; None: when trainer/shared/arch.py says the architecture has fused experts.
    expert_lora_by_trainer: bool | None = None


def capabilities(model: ModelFacts) -> arch.ArchCaps:
    """The trainer's capability table entry for the model's architecture."""
    return arch.capabilities(model.config)


def experts_quantized(model: ModelFacts, quantization: str, trainer: TrainerFacts) -> bool:
    """Whether the routed experts are stored in NF4 (True) or stay 16-bit (False)."""
    if not model.is_moe or quantization != "nf4":
        return False
    if not model.fused_experts:
        return True  # experts are nn.Linear: bitsandbytes quantises them
    if trainer.experts_quantized is not None:
        return trainer.experts_quantized
    caps = capabilities(model)
    return caps.fused_experts and caps.experts_quantized
