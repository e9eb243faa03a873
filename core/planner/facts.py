"""What the planner knows about a model: its parameter tensors, counts and layer layout.

`ModelFacts` is derived from a config.json (`core.planner.from_config.facts_from_config`);
`core.planner.weights.weights(facts)` lists its parameter tensors. Everything the planner
counts -- parameters, quantised bytes, LoRA parameters -- is a sum over those tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidInput

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "qwen3_moe", "qwen3_next", "llama", "mistral", "qwen")
# transformers >= 5 stores these MoE layers' routed experts as fused 3-D parameters, and
# PEFT >= 0.18 maps the pre-fusion names (gate_proj/up_proj/down_proj, gate) onto them.
FUSED_EXPERT_MODEL_TYPES = ("qwen3_moe", "qwen3_next")


class ModelNotDescribable(InvalidInput):
    """The planner cannot estimate this model; the message says why and what to do."""


@dataclass(frozen=True)
class Weight:
    """One parameter tensor, named as transformers names it."""

    name: str
    shape: tuple[int, ...]
    # embedding | lm_head | linear | bias | norm | routed_experts | router | other
    role: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class LinearAttention:
    """Gated DeltaNet dimensions (Qwen3-Next's linear-attention layers)."""

    key_heads: int
    value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int


@dataclass(frozen=True)
class ParamCounts:
    total: int
    active: int  # per token: every routed expert counted at num_experts_per_tok / num_experts
    embedding: int
    lm_head: int  # 0 when tied to the embedding
    linear: int  # nn.Linear weights in the decoder layers (what bitsandbytes quantises)
    routed_experts: int
    other: int  # norms, biases, routers, convolutions, gates


@dataclass(frozen=True)
class ModelFacts:
    id: str
    hub_id: str | None
    name: str
    family: str
    licence: str
    chat_template: str
    card_size: str
    source: str
    architecture: str
    model_type: str
    layers: int
    hidden: int
    intermediate: int  # dense MLP width (layers without routed experts)
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    attention_bias: bool
    experts: int  # routed experts per MoE layer; 0 for a dense model
    experts_per_token: int
    moe_intermediate: int
    shared_expert_intermediate: int  # 0: no shared expert
    moe_layers: tuple[bool, ...]  # per layer: has routed experts
    layer_types: tuple[str, ...]  # per layer: full_attention | linear_attention
    linear_attention: LinearAttention | None
    context_length: int
    params: ParamCounts
    config: Mapping[str, Any] = field(repr=False)

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def fused_experts(self) -> bool:
        """Routed experts stored as 3-D parameters (not nn.Linear) by transformers."""
        return self.is_moe and self.model_type in FUSED_EXPERT_MODEL_TYPES

    def to_dict(self) -> dict[str, Any]:
        p = self.params
        return {
            "id": self.id,
            "hub_id": self.hub_id,
            "name": self.name,
            "family": self.family,
            "licence": self.licence,
            "chat_template": self.chat_template,
            "card_size": self.card_size,
            "source": self.source,
            "architecture": self.architecture,
            "model_type": self.model_type,
            "params_total": p.total,
            "params_active": p.active,
            "layers": self.layers,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab": self.vocab,
            "tied_embeddings": self.tied_embeddings,
            "experts": self.experts,
            "experts_per_token": self.experts_per_token,
            "moe_intermediate": self.moe_intermediate,
            "shared_expert_intermediate": self.shared_expert_intermediate,
            "full_attention_layers": self.layer_types.count("full_attention"),
            "linear_attention_layers": self.layer_types.count("linear_attention"),
            "context_length": self.context_length,
        }
