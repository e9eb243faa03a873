"""BrightRun's model catalog, as data, and the facts the planner derives from a config.json.

Every catalog entry carries the architecture fields of its published `config.json`, copied
verbatim (the source of each is recorded in `CatalogEntry.source`), plus what the config
does not say: licence, chat template family, the model card's size. Everything else --
parameter counts (total, active, per part), layer kinds, default LoRA targets -- is
*derived* from that config by the same code that describes a model folder, so a catalog
model and a local copy of it can never disagree.

- `describe(model, local_models_dir=None)` -> `ModelFacts`. `model` is, in this order:
  a catalog id (`Qwen/Qwen2.5-7B-Instruct`; case-insensitive), the tiny demo model's id
  (`brightrun/tiny-chat`, described from `<local_models_dir>/tiny-chat/config.json`, the
  folder `trainer.shared.tiny.build_tiny_chat_model` writes), a folder holding a `config.json`, a
  `config.json` file, or a hub id whose `config.json` is already in the local Hugging Face
  cache (no network). Anything else raises `ModelNotDescribable`, whose message says why
  the planner cannot estimate it.
- `weights(facts)` lists every parameter tensor of the architecture under the name and
  shape transformers gives it (`model.layers.3.self_attn.q_proj.weight`), with its role
  (embedding, linear, routed experts, router, norm, ...). Parameter counts, the quantised
  share of the weights and LoRA parameter counts are all sums over this list, and the
  tests compare it with a model built from the same config on the meta device.

Supported architectures (model_type): qwen2, qwen3, qwen3_moe, qwen3_next, llama, mistral
and Qwen's first-generation `qwen` (remote code; for the published Qwen-72B anchor).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidInput

TINY_ID = "brightrun/tiny-chat"
TINY_DIR_NAME = "tiny-chat"

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "qwen3_moe", "qwen3_next", "llama", "mistral", "qwen")
# transformers >= 5 stores these MoE layers' routed experts as fused 3-D parameters, and
# PEFT >= 0.18 maps the pre-fusion names (gate_proj/up_proj/down_proj, gate) onto them.
FUSED_EXPERT_MODEL_TYPES = ("qwen3_moe", "qwen3_next")


class ModelNotDescribable(InvalidInput):
    """The planner cannot estimate this model; the message says why and what to do."""


# --- the catalog --------------------------------------------------------------------------

_HF = "https://huggingface.co/{}/blob/main/config.json"


@dataclass(frozen=True)
class CatalogEntry:
    id: str  # the hub id
    name: str
    family: str
    licence: str
    chat_template: str
    card_size: str  # the size the model card states
    config: Mapping[str, Any] = field(repr=False)  # architecture fields of config.json
    source: str = ""  # where the config values were read


def _qwen25(
    size: str,
    hidden: int,
    inter: int,
    layers: int,
    heads: int,
    kv: int,
    *,
    tied: bool,
    vocab: int,
    licence: str,
    card: str,
    read_from: str,
) -> CatalogEntry:
    hub = f"Qwen/Qwen2.5-{size}-Instruct"
    return CatalogEntry(
        id=hub,
        name=f"Qwen2.5 {size} Instruct",
        family="qwen2.5",
        licence=licence,
        chat_template="chatml",
        card_size=card,
        config={
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "vocab_size": vocab,
            "tie_word_embeddings": tied,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "torch_dtype": "bfloat16",
        },
        source=f"{_HF.format(hub)} (values read from a verbatim copy: {read_from})",
    )


def _qwen3(
    size: str, hidden: int, inter: int, layers: int, heads: int, kv: int, *, tied: bool, card: str
) -> CatalogEntry:
    hub = f"Qwen/Qwen3-{size}"
    return CatalogEntry(
        id=hub,
        name=f"Qwen3 {size}",
        family="qwen3",
        licence="apache-2.0",
        chat_template="qwen3 (ChatML with optional <think> block)",
        card_size=card,
        config={
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": 128,
            "attention_bias": False,
            "vocab_size": 151936,
            "tie_word_embeddings": tied,
            "max_position_embeddings": 40960,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000,
            "torch_dtype": "bfloat16",
        },
        source=f"{_HF.format(hub)} (values read from a collection of the official Qwen3 "
        "config.json files in a public repository, cross-checked with copies on the Hub)",
    )


_ENTRIES: tuple[CatalogEntry, ...] = (
    _qwen25(
        "0.5B",
        896,
        4864,
        24,
        14,
        2,
        tied=True,
        vocab=151936,
        licence="apache-2.0",
        card="0.49B",
        read_from="huggingface.co/unsloth/Qwen2.5-0.5B-Instruct",
    ),
    _qwen25(
        "1.5B",
        1536,
        8960,
        28,
        12,
        2,
        tied=True,
        vocab=151936,
        licence="apache-2.0",
        card="1.54B",
        read_from="huggingface.co/onnx-community/Qwen2.5-1.5B-Instruct",
    ),
    _qwen25(
        "3B",
        2048,
        11008,
        36,
        16,
        2,
        tied=True,
        vocab=151936,
        licence="qwen-research",
        card="3.09B",
        read_from="huggingface.co/osllmai-community/Qwen2.5-3B-Instruct",
    ),
    _qwen25(
        "7B",
        3584,
        18944,
        28,
        28,
        4,
        tied=False,
        vocab=152064,
        licence="apache-2.0",
        card="7.61B",
        read_from="huggingface.co/osllmai-community/Qwen2.5-7B-Instruct",
    ),
    _qwen25(
        "14B",
        5120,
        13824,
        48,
        40,
        8,
        tied=False,
        vocab=152064,
        licence="apache-2.0",
        card="14.7B",
        read_from="huggingface.co/osllmai-community/Qwen2.5-14B-Instruct",
    ),
    _qwen25(
        "32B",
        5120,
        27648,
        64,
        40,
        8,
        tied=False,
        vocab=152064,
        licence="apache-2.0",
        card="32.5B",
        read_from="the Qwen2.5-32B config.json and a fine-tune of Qwen2.5-32B-Instruct on the Hub",
    ),
    _qwen25(
        "72B",
        8192,
        29568,
        80,
        64,
        8,
        tied=False,
        vocab=152064,
        licence="qwen",
        card="72.7B",
        read_from="huggingface.co/OPEA/Qwen2.5-72B-Instruct-int4-sym-inc "
        "(architecture fields of Qwen2.5-72B-Instruct)",
    ),
    _qwen3("0.6B", 1024, 3072, 28, 16, 8, tied=True, card="0.6B"),
    _qwen3("1.7B", 2048, 6144, 28, 16, 8, tied=True, card="1.7B"),
    _qwen3("4B", 2560, 9728, 36, 32, 8, tied=True, card="4.0B"),
    _qwen3("8B", 4096, 12288, 36, 32, 8, tied=False, card="8.2B"),
    _qwen3("14B", 5120, 17408, 40, 40, 8, tied=False, card="14.8B"),
    _qwen3("32B", 5120, 25600, 64, 64, 8, tied=False, card="32.8B"),
    CatalogEntry(
        id="Qwen/Qwen3-30B-A3B",
        name="Qwen3 30B-A3B (MoE)",
        family="qwen3-moe",
        licence="apache-2.0",
        chat_template="qwen3 (ChatML with optional <think> block)",
        card_size="30.5B total, 3.3B activated",
        config={
            "architectures": ["Qwen3MoeForCausalLM"],
            "model_type": "qwen3_moe",
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "moe_intermediate_size": 768,
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": True,
            "num_hidden_layers": 48,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "attention_bias": False,
            "vocab_size": 151936,
            "tie_word_embeddings": False,
            "max_position_embeddings": 40960,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "torch_dtype": "bfloat16",
        },
        source=_HF.format("Qwen/Qwen3-30B-A3B") + " (values read from a collection of the "
        "official Qwen3 config.json files in a public repository)",
    ),
    CatalogEntry(
        id="Qwen/Qwen3-Next-80B-A3B-Instruct",
        name="Qwen3-Next 80B-A3B Instruct (hybrid attention MoE)",
        family="qwen3-next",
        licence="apache-2.0",
        chat_template="chatml (instruct model, no <think> block)",
        card_size="80B total, 3B activated",
        config={
            "architectures": ["Qwen3NextForCausalLM"],
            "model_type": "qwen3_next",
            "hidden_size": 2048,
            "intermediate_size": 5120,
            "moe_intermediate_size": 512,
            "shared_expert_intermediate_size": 512,
            "num_experts": 512,
            "num_experts_per_tok": 10,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": True,
            "num_hidden_layers": 48,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "head_dim": 256,
            "full_attention_interval": 4,
            "linear_conv_kernel_dim": 4,
            "linear_key_head_dim": 128,
            "linear_num_key_heads": 16,
            "linear_num_value_heads": 32,
            "linear_value_head_dim": 128,
            "partial_rotary_factor": 0.25,
            "vocab_size": 151936,
            "tie_word_embeddings": False,
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-06,
            "rope_theta": 10000000,
            "torch_dtype": "bfloat16",
        },
        source=_HF.format("Qwen/Qwen3-Next-80B-A3B-Instruct") + " (values read from a "
        "copy of the model's config in a public repository and cross-checked with "
        "Qwen3-Next configs on the Hub and transformers' Qwen3NextConfig defaults)",
    ),
)

CATALOG: dict[str, CatalogEntry] = {e.id: e for e in _ENTRIES}

TINY_ENTRY = {
    "id": TINY_ID,
    "name": "BrightRun tiny chat (local demo, random weights)",
    "family": "tiny",
    "licence": "apache-2.0 (built locally by trainer.shared.tiny)",
    "chat_template": "chatml",
    "card_size": "~0.2M (hidden 64, 2 layers)",
}


def catalog_ids() -> list[str]:
    """Every model id the catalog knows, the tiny demo model last."""
    return [*CATALOG, TINY_ID]


# --- facts derived from a config ------------------------------------------------------------


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
    experts = int(cfg.get("num_experts") or 0) if model_type in FUSED_EXPERT_MODEL_TYPES else 0
    step = int(cfg.get("decoder_sparse_step") or 1)
    dense_only = set(cfg.get("mlp_only_layers") or [])
    moe_layers = tuple(
        experts > 0 and i not in dense_only and (i + 1) % step == 0 for i in range(layers)
    )
    if model_type == "qwen3_next":
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
    else:
        layer_types = ("full_attention",) * layers
        lin = None
    if not inter and not all(moe_layers):
        raise ModelNotDescribable(
            f"cannot estimate {id}: its config.json has no 'intermediate_size'"
        )
    tied = bool(cfg.get("tie_word_embeddings", False))  # transformers' default for these
    context = int(
        cfg.get("max_position_embeddings") or cfg.get("seq_length") or cfg.get("n_positions") or 0
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
        layers=layers,
        hidden=hidden,
        intermediate=inter,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        vocab=vocab,
        tied_embeddings=tied,
        attention_bias=_attention_bias(cfg, model_type),
        experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0) if experts else 0,
        moe_intermediate=int(cfg.get("moe_intermediate_size") or 0) if experts else 0,
        shared_expert_intermediate=(
            int(cfg.get("shared_expert_intermediate_size") or 0) if experts else 0
        ),
        moe_layers=moe_layers,
        layer_types=layer_types,
        linear_attention=lin,
        context_length=context,
        params=ParamCounts(0, 0, 0, 0, 0, 0, 0),
        config=dict(cfg),
    )
    return _with_counts(facts)


def _attention_bias(cfg: Mapping[str, Any], model_type: str) -> bool:
    if model_type in ("qwen2", "qwen"):
        return True  # q/k/v (c_attn) carry a bias
    return bool(cfg.get("attention_bias", False))


def _with_counts(f: ModelFacts) -> ModelFacts:
    from dataclasses import replace

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


def weights(f: ModelFacts) -> list[Weight]:
    """Every parameter tensor of the architecture, with transformers' names and shapes."""
    if f.model_type == "qwen":
        return _qwen1_weights(f)
    h = f.hidden
    out: list[Weight] = [Weight("model.embed_tokens.weight", (f.vocab, h), "embedding")]
    for i in range(f.layers):
        p = f"model.layers.{i}."
        if f.layer_types[i] == "linear_attention":
            out += _linear_attention(f, p + "linear_attn.")
        else:
            out += _attention(f, p + "self_attn.")
        if f.moe_layers[i]:
            out += _moe(f, p + "mlp.")
        else:
            out += _mlp(p + "mlp.", h, f.intermediate)
        out.append(Weight(p + "input_layernorm.weight", (h,), "norm"))
        out.append(Weight(p + "post_attention_layernorm.weight", (h,), "norm"))
    out.append(Weight("model.norm.weight", (h,), "norm"))
    if not f.tied_embeddings:
        out.append(Weight("lm_head.weight", (f.vocab, h), "lm_head"))
    return out


def _linear(name: str, in_f: int, out_f: int, bias: bool = False) -> list[Weight]:
    ws = [Weight(name + ".weight", (out_f, in_f), "linear")]
    if bias:
        ws.append(Weight(name + ".bias", (out_f,), "bias"))
    return ws


def _attention(f: ModelFacts, p: str) -> list[Weight]:
    h, d, a, kv = f.hidden, f.head_dim, f.heads, f.kv_heads
    q_out = a * d * (2 if f.model_type == "qwen3_next" else 1)  # Qwen3-Next: query + gate
    ws = _linear(p + "q_proj", h, q_out, f.attention_bias)
    ws += _linear(p + "k_proj", h, kv * d, f.attention_bias)
    ws += _linear(p + "v_proj", h, kv * d, f.attention_bias)
    ws += _linear(p + "o_proj", a * d, h, f.attention_bias and f.model_type != "qwen2")
    if f.model_type in ("qwen3", "qwen3_moe", "qwen3_next"):
        ws += [Weight(p + "q_norm.weight", (d,), "norm"), Weight(p + "k_norm.weight", (d,), "norm")]
    return ws


def _linear_attention(f: ModelFacts, p: str) -> list[Weight]:
    la = f.linear_attention
    assert la is not None
    key_dim = la.key_heads * la.key_head_dim
    value_dim = la.value_heads * la.value_head_dim
    conv_dim = 2 * key_dim + value_dim
    ws = [
        Weight(p + "dt_bias", (la.value_heads,), "other"),
        Weight(p + "A_log", (la.value_heads,), "other"),
        Weight(p + "conv1d.weight", (conv_dim, 1, la.conv_kernel), "other"),
    ]
    ws += _linear(p + "in_proj_qkvz", f.hidden, 2 * key_dim + 2 * value_dim)
    ws += _linear(p + "in_proj_ba", f.hidden, 2 * la.value_heads)
    ws.append(Weight(p + "norm.weight", (la.value_head_dim,), "norm"))
    ws += _linear(p + "out_proj", value_dim, f.hidden)
    return ws


def _mlp(p: str, h: int, inter: int) -> list[Weight]:
    return (
        _linear(p + "gate_proj", h, inter)
        + _linear(p + "up_proj", h, inter)
        + _linear(p + "down_proj", inter, h)
    )


def _moe(f: ModelFacts, p: str) -> list[Weight]:
    h, m, e = f.hidden, f.moe_intermediate, f.experts
    ws = [
        Weight(p + "gate.weight", (e, h), "router"),
        Weight(p + "experts.gate_up_proj", (e, 2 * m, h), "routed_experts"),
        Weight(p + "experts.down_proj", (e, h, m), "routed_experts"),
    ]
    if f.shared_expert_intermediate:
        ws += _mlp(p + "shared_expert.", h, f.shared_expert_intermediate)
        ws += _linear(p + "shared_expert_gate", h, 1)
    return ws


def _qwen1_weights(f: ModelFacts) -> list[Weight]:
    h, i = f.hidden, f.intermediate
    out = [Weight("transformer.wte.weight", (f.vocab, h), "embedding")]
    for n in range(f.layers):
        p = f"transformer.h.{n}."
        out.append(Weight(p + "ln_1.weight", (h,), "norm"))
        out += _linear(p + "attn.c_attn", h, 3 * f.heads * f.head_dim, bias=True)
        out += _linear(p + "attn.c_proj", f.heads * f.head_dim, h)
        out.append(Weight(p + "ln_2.weight", (h,), "norm"))
        out += _linear(p + "mlp.w1", h, i) + _linear(p + "mlp.w2", h, i)
        out += _linear(p + "mlp.c_proj", i, h)
    out.append(Weight("transformer.ln_f.weight", (h,), "norm"))
    if not f.tied_embeddings:
        out.append(Weight("lm_head.weight", (f.vocab, h), "lm_head"))
    return out


# --- describe -----------------------------------------------------------------------------


def _from_entry(e: CatalogEntry) -> ModelFacts:
    return facts_from_config(
        e.config,
        id=e.id,
        hub_id=e.id,
        name=e.name,
        family=e.family,
        licence=e.licence,
        chat_template=e.chat_template,
        card_size=e.card_size,
        source=e.source,
    )


def _read_config(path: Path, what: str) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ModelNotDescribable(f"cannot estimate {what}: {path} cannot be read ({e})") from e
    except json.JSONDecodeError as e:
        raise ModelNotDescribable(f"cannot estimate {what}: {path} is not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ModelNotDescribable(f"cannot estimate {what}: {path} is not a JSON object")
    return cfg


def describe(model: str, *, local_models_dir: Path | str | None = None) -> ModelFacts:
    """Facts for a catalog id, the tiny demo model, a local folder/config, or a cached hub id."""
    wanted = model.strip()
    for entry in CATALOG.values():
        if entry.id.lower() == wanted.lower():
            return _from_entry(entry)
    if wanted.lower() == TINY_ID:
        if local_models_dir is None:
            raise ModelNotDescribable(
                f"cannot estimate {TINY_ID}: it is built on this machine and the planner "
                "was not told where local models live"
            )
        folder = Path(local_models_dir) / TINY_DIR_NAME
        if not (folder / "config.json").is_file():
            raise ModelNotDescribable(
                f"cannot estimate {TINY_ID}: it has not been built yet ({folder} has no "
                f"config.json); build it with `python -m trainer.shared.tiny {folder}`"
            )
        cfg = _read_config(folder / "config.json", TINY_ID)
        return facts_from_config(
            cfg,
            id=TINY_ID,
            source=str(folder / "config.json"),
            **{k: v for k, v in TINY_ENTRY.items() if k != "id"},
        )
    path = Path(wanted).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotDescribable(
                f"cannot estimate {wanted}: the folder has no config.json (a model folder "
                "as save_pretrained writes it is needed)"
            )
        path = path / "config.json"
    if path.is_file():
        cfg = _read_config(path, wanted)
        return facts_from_config(cfg, id=wanted, source=str(path))
    cached = _cached_hub_config(wanted)
    if cached is not None:
        cfg = _read_config(cached, wanted)
        return facts_from_config(cfg, id=wanted, hub_id=wanted, source=f"{cached} (hub cache)")
    raise ModelNotDescribable(
        f"cannot estimate {wanted}: it is not in BrightRun's catalog, not a local folder with "
        "a config.json, and its config.json is not in the local Hugging Face cache (the "
        "planner does not download); pick a catalog model or give a model folder"
    )


def _cached_hub_config(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".")):
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError:
        return None
    return Path(hit) if isinstance(hit, str) else None


def catalog_models(local_models_dir: Path | str | None = None) -> list[ModelFacts]:
    """Facts for every catalog model (and the tiny demo model once it is built)."""
    out = [_from_entry(e) for e in CATALOG.values()]
    if local_models_dir is not None and (Path(local_models_dir) / TINY_DIR_NAME).is_dir():
        out.append(describe(TINY_ID, local_models_dir=local_models_dir))
    return out
