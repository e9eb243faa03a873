"""Memory facts about Mixture-of-Experts models, from a config alone. Imports no torch.

The planner (`core/planner/`) and `trainer.moe` use the same arithmetic, so that what
is predicted before launch is what the worker then allocates.

- `nf4_bytes(numel, blocksize=64)`: bytes of one tensor stored in NF4 with double
  quantisation, exactly as bitsandbytes lays it out (4-bit codes, one 8-bit absmax per
  block of `blocksize`, one fp32 scale per 256 absmax values, one fp32 offset). Per
  tensor: for a fused expert tensor BrightRun quantises every expert separately, so call it
  once per expert. The asymptotic rate is `trainer.shared.arch.NF4_BITS` (~4.127 bits).
- `routed_expert_params(config)`: parameters of the routed experts (all of them, every
  MoE layer), the part that `trainer.moe` quantises.
- `expert_lora_params(config, r)`: trainable parameters of LoRA on the routed experts
  (`lora_on_experts`): one rank-`r` pair per expert for `gate_up_proj` and `down_proj`,
  i.e. `r * (hidden + 2 * inter) + r * (inter + hidden)` per expert.

`config` is a `config.json` dict or a transformers config object; a multimodal config's
`text_config` is used when present. A config without routed experts gives 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NESTED_BLOCKSIZE = 256  # bitsandbytes quantises the absmax values in blocks of 256


def nf4_bytes(numel: int, blocksize: int = 64) -> int:
    """Bytes bitsandbytes stores for one NF4 tensor with double quantisation."""
    if numel <= 0:
        return 0
    blocks = -(-numel // blocksize)
    nested_blocks = -(-blocks // NESTED_BLOCKSIZE)
    return (numel + 1) // 2 + blocks + 4 * nested_blocks + 4  # codes, absmax, scales, offset


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _text(config: Any) -> Any:
    text = _get(config, "text_config")
    return text if text else config


def moe_layers(config: Any) -> int:
    """How many decoder layers have routed experts."""
    config = _text(config)
    experts = int(_get(config, "num_experts", 0) or _get(config, "num_local_experts", 0) or 0)
    if experts <= 0:
        return 0
    layers = int(_get(config, "num_hidden_layers"))
    step = int(_get(config, "decoder_sparse_step", 1) or 1)
    dense = set(_get(config, "mlp_only_layers", None) or [])
    return sum(1 for i in range(layers) if i not in dense and (i + 1) % step == 0)


def _expert_shape(config: Any) -> tuple[int, int, int]:
    config = _text(config)
    experts = int(_get(config, "num_experts", 0) or _get(config, "num_local_experts", 0) or 0)
    hidden = int(_get(config, "hidden_size"))
    inter = int(_get(config, "moe_intermediate_size", 0) or _get(config, "intermediate_size"))
    return experts, hidden, inter


def routed_expert_params(config: Any) -> int:
    """Parameters of all routed experts (gate, up and down projections) in all MoE layers."""
    experts, hidden, inter = _expert_shape(config)
    return moe_layers(config) * experts * 3 * hidden * inter


def routed_expert_nf4_bytes(config: Any, blocksize: int = 64) -> int:
    """Bytes of all routed experts in NF4 as `trainer.moe` stores them (per-expert blocks)."""
    experts, hidden, inter = _expert_shape(config)
    per_expert = nf4_bytes(2 * inter * hidden, blocksize) + nf4_bytes(hidden * inter, blocksize)
    layers = moe_layers(config)
    # + one shared copy of the 16-entry NF4 table and the 256-entry absmax table (fp32)
    return layers * experts * per_expert + (4 * (16 + 256) if layers else 0)


def expert_lora_params(config: Any, r: int) -> int:
    """Trainable parameters of rank-`r` LoRA on every routed expert (`lora_on_experts`)."""
    experts, hidden, inter = _expert_shape(config)
    per_expert = r * (hidden + 2 * inter) + r * (inter + hidden)
    return moe_layers(config) * experts * per_expert


# The shape-setting fields of the published config.json of Qwen/Qwen3-Next-80B-A3B-Instruct
# (the Thinking and Base releases share them): random-weight benchmarks and checks build
# the real-size architecture from this, with no download.
QWEN3_NEXT_80B_A3B: dict[str, Any] = {
    "model_type": "qwen3_next",
    "architectures": ["Qwen3NextForCausalLM"],
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 5120,
    "num_hidden_layers": 48,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "partial_rotary_factor": 0.25,
    "rope_theta": 5000000,
    "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "linear_value_head_dim": 128,
    "full_attention_interval": 4,
    "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 512,
    "num_experts": 512,
    "num_experts_per_tok": 10,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "tie_word_embeddings": False,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-06,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
