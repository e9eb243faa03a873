"""What BrightRun knows about each model architecture, as data. Imports no torch (`trainer.shared`).

The trainer and the planner (`core/planner/`) read the same facts from here, so the
next dense, MoE or hybrid model is one `ArchCaps` entry rather than a new code path.

- `capabilities(x)` takes a transformers config object, a `config.json` dict, a
  `model_type` ("qwen2") or an architecture name ("Qwen2ForCausalLM") and returns the
  entry's `ArchCaps`. An architecture that is not in the table gets `UNKNOWN_CAPS`: no
  packing (length-grouped padding is exact for any architecture) and PEFT's `all-linear`.
- Packing modes (`ArchCaps.packing`):
  * `position_ids` - several samples share one row; position ids restart at 0 for each
    sample and no attention mask is passed, so transformers builds a block-diagonal causal
    mask from the position ids (sdpa/eager), or flash-attention varlen uses them as
    sequence boundaries. Exact for models whose every layer is softmax attention.
  * `seq_boundaries` - packing for models with recurrent/linear-attention layers whose
    kernels take `cu_seqlens`/`seq_idx`; the trainer passes them.
  * `padded` - no packing: rows are grouped by length and padded, with an attention mask.
    Used where the boundaries cannot be handed to every layer.
- `BITS_PER_PARAM` / `bits_per_param()` - storage bits per parameter of a quantised
  linear weight, as bitsandbytes stores it (quantisation constants included).
- The torch-side hooks that act on these facts (`load_context`, `post_load`, `post_lora`)
  are in `trainer.arch_hooks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from trainer.shared.methods import METHODS, Method

PackingMode = Literal["position_ids", "seq_boundaries", "padded"]

# NF4 with double quantisation: 4-bit codes, one 8-bit absmax per block of 64 weights,
# and one fp32 scale (plus offset) per 256 absmax values: 4 + 8/64 + 32/(64*256).
NF4_BITS = 4.0 + 8.0 / 64 + 32.0 / (64 * 256)  # ~= 4.127
# NF4 without double quantisation: one fp32 absmax per block of 64.
NF4_PLAIN_BITS = 4.0 + 32.0 / 64  # 4.5
# LLM.int8: int8 weights plus one fp32 scale per output row (32/in_features bits each);
# 8.008 is the value for in_features = 4096.
INT8_TYPICAL_IN_FEATURES = 4096

BITS_PER_PARAM: dict[str, float] = {
    "nf4": NF4_BITS,
    "int8": 8.0 + 32.0 / INT8_TYPICAL_IN_FEATURES,
    "none": 16.0,  # bf16/fp16 weights
}
# Everything that is not a quantised linear weight (embeddings, lm_head, norms, routers,
# biases) stays in the 16-bit compute dtype whatever the quantisation.
UNQUANTIZED_BITS = 16.0


def bits_per_param(quantization: str, in_features: int | None = None) -> float:
    """Storage bits per weight of one quantised linear layer (constants included)."""
    if quantization == "int8" and in_features:
        return 8.0 + 32.0 / in_features
    try:
        return BITS_PER_PARAM[quantization]
    except KeyError:
        raise ValueError(
            f"unknown quantization {quantization!r}; use one of {sorted(BITS_PER_PARAM)}"
        ) from None


@dataclass(frozen=True)
class ArchCaps:
    """Capabilities of one architecture (see the module docstring)."""

    model_type: str
    architectures: tuple[str, ...] = ()
    packing: PackingMode = "padded"
    packing_reason: str = ""
    # What the spec's "all-linear" becomes: explicit names, so the adapter config says what
    # was adapted and serving stacks (vLLM) recognise every module.
    lora_targets: tuple[str, ...] = ()
    # Extra targets when the spec asks for LoRA on routed experts (MoE only).
    expert_lora_targets: tuple[str, ...] = ()
    moe: bool = False
    # Experts stored as 3-D parameters (experts x out x in) rather than nn.Linear modules:
    # bitsandbytes does not quantise them; `post_load` does (via trainer.moe).
    fused_experts: bool = False
    # Under nf4, the fused experts are stored in NF4 too (~4.13 bits, trainer.moe), so the
    # planner counts them at NF4_BITS; False: they stay 16-bit whatever the quantisation.
    experts_quantized: bool = False
    hybrid_linear_attention: bool = False
    # Module name fragments never quantised (beyond lm_head), e.g. MoE routers.
    keep_full_precision: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "packing": self.packing,
            "packing_reason": self.packing_reason,
            "lora_targets": list(self.lora_targets),
            "expert_lora_targets": list(self.expert_lora_targets),
            "moe": self.moe,
            "fused_experts": self.fused_experts,
            "experts_quantized": self.experts_quantized,
            "hybrid_linear_attention": self.hybrid_linear_attention,
        }


_DENSE_ATTENTION_REASON = (
    "every layer is softmax attention: position ids restart per sample and the attention "
    "mask is block-diagonal (sdpa/eager) or varlen (flash-attention), so samples never "
    "attend to each other"
)
_QWEN_DENSE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

ARCH_TABLE: dict[str, ArchCaps] = {}


def register(caps: ArchCaps) -> ArchCaps:
    """Add or replace one architecture's entry (keyed by its model_type)."""
    ARCH_TABLE[caps.model_type] = caps
    return caps


for _mt, _arch in (
    ("qwen2", "Qwen2ForCausalLM"),
    ("qwen3", "Qwen3ForCausalLM"),
    ("llama", "LlamaForCausalLM"),
    ("mistral", "MistralForCausalLM"),
):
    register(
        ArchCaps(
            model_type=_mt,
            architectures=(_arch,),
            packing="position_ids",
            packing_reason=_DENSE_ATTENTION_REASON,
            lora_targets=_QWEN_DENSE_TARGETS,
        )
    )

# Fused-expert MoE models (transformers stores routed experts as 3-D tensors). Routers stay
# in full precision; LoRA on the routed experts (`lora_on_experts`) is added by
# `post_lora` (trainer.moe), not by PEFT, so `expert_lora_targets` stays empty; its size is
# `trainer.shared.moe_facts.expert_lora_params(config, r)`.
register(
    ArchCaps(
        model_type="qwen3_moe",
        architectures=("Qwen3MoeForCausalLM",),
        packing="position_ids",
        packing_reason=_DENSE_ATTENTION_REASON,
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"),
        moe=True,
        fused_experts=True,
        experts_quantized=True,
        keep_full_precision=("mlp.gate",),
    )
)
register(
    ArchCaps(
        model_type="qwen3_next",
        architectures=("Qwen3NextForCausalLM",),
        packing="seq_boundaries",
        packing_reason=(
            "hybrid model: the softmax-attention layers get position ids and varlen "
            "boundaries, and every Gated DeltaNet layer runs its conv1d and recurrence "
            "once per sample from a zero state (trainer.packing_hybrid), so samples never "
            "see each other"
        ),
        # full attention, linear attention (Gated DeltaNet) and the shared expert
        lora_targets=(
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "in_proj_qkvz",
            "in_proj_ba",
            "out_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ),
        moe=True,
        fused_experts=True,
        experts_quantized=True,
        hybrid_linear_attention=True,
        # the router, and the shared expert's one-output gate (bitsandbytes' CPU 4-bit
        # inference kernel also needs out_features divisible by 32)
        keep_full_precision=("mlp.gate", "shared_expert_gate"),
    )
)

UNKNOWN_CAPS = ArchCaps(
    model_type="unknown",
    packing="padded",
    packing_reason="architecture not in BrightRun's table: length-grouped padding, which is "
    "exact for any architecture, instead of packing",
    lora_targets=(),  # empty: PEFT's own "all-linear"
)


def _model_type_and_archs(x: Any) -> tuple[str, tuple[str, ...]]:
    if isinstance(x, str):
        return (x, ()) if "For" not in x else ("", (x,))
    if isinstance(x, Mapping):
        return str(x.get("model_type") or ""), tuple(x.get("architectures") or ())
    return str(getattr(x, "model_type", "") or ""), tuple(getattr(x, "architectures", None) or ())


def capabilities(x: Any) -> ArchCaps:
    """The `ArchCaps` for a config object, a config dict, a model_type or an architecture."""
    model_type, archs = _model_type_and_archs(x)
    if model_type in ARCH_TABLE:
        return ARCH_TABLE[model_type]
    for caps in ARCH_TABLE.values():
        if any(a in caps.architectures for a in archs):
            return caps
    return replace(UNKNOWN_CAPS, model_type=model_type or (archs[0] if archs else "unknown"))


def shares_prompts(method: str, packing: str, config: Any) -> bool:
    """Whether a job lays out each prompt once for its answers: a preference pair's for
    chosen and rejected (`trainer.preference`), a generating method's for its group of
    completions (`trainer.grpo.group_rows`), where `prefix_sharing_exact`. `config` is a
    transformers config object or a `config.json` dict."""
    info = METHODS[Method(method)]
    return (info.data == "pairs" or info.generates) and prefix_sharing_exact(packing, config)


def prefix_sharing_exact(packing: str, config: Any) -> bool:
    """Whether sequences that begin alike may share that beginning, laid out once, and get
    the outputs they would get apart: packed rows (`packing` "position_ids": every layer is
    softmax attention) without a sliding window. Preference pairs and GRPO's groups of
    completions use it. `config` is a transformers config object or a `config.json` dict."""
    if isinstance(config, Mapping):
        window = config.get("sliding_window") and config.get("use_sliding_window", True)
    else:
        window = getattr(config, "sliding_window", None) and getattr(
            config, "use_sliding_window", True
        )
    return packing == "position_ids" and not window


def resolve_lora_targets(caps: ArchCaps, target_modules: list[str] | str, on_experts: bool) -> Any:
    """What to pass to peft's `LoraConfig(target_modules=...)` for the spec's setting."""
    if target_modules != "all-linear":
        return list(target_modules)
    if not caps.lora_targets:
        return "all-linear"
    targets = list(caps.lora_targets)
    if on_experts:
        targets += [t for t in caps.expert_lora_targets if t not in targets]
    return targets
