"""BrightRun's model catalog, as data: the Qwen models a user can pick by id.

Every entry carries the architecture fields of its published `config.json`, copied
verbatim (the source of each is recorded in `CatalogEntry.source`), plus what the config
does not say: licence, chat template family, the model card's size. Everything else --
parameter counts (total, active, per part), layer kinds, default LoRA targets -- is
*derived* from that config (`core.planner.from_config`) by the same code that describes a
model folder (`core.planner.describe`), so a catalog model and a local copy of it can
never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TINY_ID = "brightrun/tiny-chat"
TINY_DIR_NAME = "tiny-chat"

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
