"""`ModelFacts` from a config.json dict, parameter counts included.

Accepts the text-only causal LMs of `SUPPORTED_MODEL_TYPES`; raises `ModelNotDescribable`
(a message naming the missing field or the unknown architecture) for anything else. Fields
the config leaves out take transformers' defaults for that architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from core.planner.facts import (
    FUSED_EXPERT_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    LinearAttention,
    ModelFacts,
    ModelNotDescribable,
    ParamCounts,
)
from core.planner.weights import weights


def _need(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if cfg.get(key) is None:
        raise ModelNotDescribable(
            f"cannot estimate {where}: its config.json has no {key!r}, which the planner "
            "needs to size the model"
        )
    return cfg[key]


def facts_from_config(
    config: Mapping[str, Any],
    *,
    id: str,
    hub_id: str | None = None,
    name: str | None = None,
    family: str = "local",
    licence: str = "unknown (see the model's card)",
    chat_template: str = "from the model's tokenizer",
    card_size: str = "",
    source: str = "",
) -> ModelFacts:
    """Derive `ModelFacts` from a config.json dict; raises `ModelNotDescribable`."""
    cfg: Mapping[str, Any] = config
    model_type = _supported_model_type(cfg, id)
    shape = _dense_shape(cfg, model_type, id)
    experts = _moe_shape(cfg, model_type, shape["layers"])
    layer_types, lin = _attention_layers(cfg, model_type, shape["layers"], id)
    if not shape["intermediate"] and not all(experts["moe_layers"]):
        raise ModelNotDescribable(
            f"cannot estimate {id}: its config.json has no 'intermediate_size'"
        )
    facts = ModelFacts(
        id=id,
        hub_id=hub_id,
        name=name or id,
        family=family,
        licence=licence,
        chat_template=chat_template,
        card_size=card_size,
        source=source,
        architecture=str((cfg.get("architectures") or [model_type])[0]),
        model_type=model_type,
        **shape,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),  # transformers' default
        attention_bias=_attention_bias(cfg, model_type),
        **experts,
        layer_types=layer_types,
        linear_attention=lin,
        context_length=int(
            cfg.get("max_position_embeddings")
            or cfg.get("seq_length")
            or cfg.get("n_positions")
            or 0
        ),
        params=ParamCounts(0, 0, 0, 0, 0, 0, 0),
        config=dict(cfg),
    )
    return _with_counts(facts)


def _supported_model_type(cfg: Mapping[str, Any], id: str) -> str:
    """The config's model_type, when it is a text-only architecture the planner sizes."""
    if isinstance(cfg.get("text_config"), Mapping) or cfg.get("vision_config"):
        raise ModelNotDescribable(
            f"cannot estimate {id}: it is a multimodal model (config.json has a text/vision "
            "config); BrightRun fine-tunes text-only causal language models"
        )
    model_type = str(cfg.get("model_type") or "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelNotDescribable(
            f"cannot estimate {id}: BrightRun does not know the architecture "
            f"{model_type or cfg.get('architectures') or 'without a model_type'} "
            f"(it sizes {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return model_type


def _dense_shape(cfg: Mapping[str, Any], model_type: str, id: str) -> dict[str, int]:
    """layers, hidden, intermediate, heads, kv_heads, head_dim and vocab."""
    hidden = int(_need(cfg, "hidden_size", id))
    layers = int(_need(cfg, "num_hidden_layers", id))
    heads = int(_need(cfg, "num_attention_heads", id))
    vocab = int(_need(cfg, "vocab_size", id))
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or cfg.get("kv_channels") or hidden // heads)
    inter = int(cfg.get("intermediate_size") or 0)
    if model_type == "qwen":
        inter //= 2  # first-generation Qwen states the w1+w2 width
        kv = heads
    return {
        "layers": layers,
        "hidden": hidden,
        "intermediate": inter,
        "heads": heads,
        "kv_heads": kv,
        "head_dim": head_dim,
        "vocab": vocab,
    }


def _moe_shape(cfg: Mapping[str, Any], model_type: str, layers: int) -> dict[str, Any]:
    """Routed experts, their width, the shared expert and which layers have them."""
    experts = int(cfg.get("num_experts") or 0) if model_type in FUSED_EXPERT_MODEL_TYPES else 0
    step = int(cfg.get("decoder_sparse_step") or 1)
    dense_only = set(cfg.get("mlp_only_layers") or [])
    return {
        "experts": experts,
        "experts_per_token": int(cfg.get("num_experts_per_tok") or 0) if experts else 0,
        "moe_intermediate": int(cfg.get("moe_intermediate_size") or 0) if experts else 0,
        "shared_expert_intermediate": (
            int(cfg.get("shared_expert_intermediate_size") or 0) if experts else 0
        ),
        "moe_layers": tuple(
            experts > 0 and i not in dense_only and (i + 1) % step == 0 for i in range(layers)
        ),
    }


def _attention_layers(
    cfg: Mapping[str, Any], model_type: str, layers: int, id: str
) -> tuple[tuple[str, ...], LinearAttention | None]:
    """Per layer full or linear attention, and the linear attention's dimensions."""
    if model_type != "qwen3_next":
        return ("full_attention",) * layers, None
    interval = int(cfg.get("full_attention_interval") or 4)
    layer_types = tuple(
        cfg.get("layer_types")
        or [
            "full_attention" if (i + 1) % interval == 0 else "linear_attention"
            for i in range(layers)
        ]
    )
    lin = LinearAttention(
        key_heads=int(_need(cfg, "linear_num_key_heads", id)),
        value_heads=int(_need(cfg, "linear_num_value_heads", id)),
        key_head_dim=int(_need(cfg, "linear_key_head_dim", id)),
        value_head_dim=int(_need(cfg, "linear_value_head_dim", id)),
        conv_kernel=int(cfg.get("linear_conv_kernel_dim") or 4),
    )
    return layer_types, lin


def _attention_bias(cfg: Mapping[str, Any], model_type: str) -> bool:
    if model_type in ("qwen2", "qwen"):
        return True  # q/k/v (c_attn) carry a bias
    return bool(cfg.get("attention_bias", False))


def _with_counts(f: ModelFacts) -> ModelFacts:
    ws = weights(f)
    total = sum(w.numel for w in ws)
    by = {r: sum(w.numel for w in ws if w.role == r) for r in {w.role for w in ws}}
    experts = by.get("routed_experts", 0)
    inactive = experts - experts * f.experts_per_token // f.experts if f.experts else 0
    counts = ParamCounts(
        total=total,
        active=total - inactive,
        embedding=by.get("embedding", 0),
        lm_head=by.get("lm_head", 0),
        linear=by.get("linear", 0),
        routed_experts=experts,
        other=total - by.get("embedding", 0) - by.get("lm_head", 0) - by.get("linear", 0) - experts,
    )
    return replace(f, params=counts)
