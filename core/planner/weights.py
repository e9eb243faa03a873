"""Every parameter tensor of a described model, under the name and shape transformers gives it
(`model.layers.3.self_attn.q_proj.weight`), with its role (embedding, linear, routed experts,
router, norm, ...). The tests compare this list with a model built from the same config on
the meta device."""

from __future__ import annotations

from core.planner.facts import ModelFacts, Weight


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
