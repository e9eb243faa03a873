"""Routed experts in NF4 for MoE models whose experts are fused 3-D tensors.

transformers stores a MoE layer's routed experts as two parameters,
`experts.gate_up_proj` (experts x 2*inter x hidden) and `experts.down_proj`
(experts x hidden x inter). bitsandbytes quantises `nn.Linear` modules only, so a
"4-bit" load leaves these (~97% of Qwen3-Next-80B-A3B's parameters) in bf16. This module
closes that gap.

- `quantize_experts(model, source=None, device=None)` replaces every fused-experts module
  by an `NF4Experts`: each expert's two matrices in NF4 with double quantisation
  (blocksize 64; 8-bit absmax with one fp32 scale per 256 blocks and one fp32 offset
  per expert: ~4.127 bits a parameter, the same layout bitsandbytes' `quantize_4bit` gives
  a single expert), computing in the model's 4-bit compute dtype (bf16 by default).
  It works one MoE layer at a time. Weights come from the module itself, or, when the model
  was built on the meta device, from `source(module_name, module) -> (gate_up, down)`, so a
  real-size model never holds all its experts in bf16. Returns facts for the `started`
  event. The router, the shared expert gate and everything else stay as loaded (the
  shared expert's `nn.Linear`s are `Linear4bit` already).
- `experts_load_in_nf4(model_type, compute_dtype)`: a context for `from_pretrained` in
  which the model's fused-experts class is replaced by `StreamingNF4Experts`, which
  quantises each fused tensor as the loader hands it over: peak memory while loading is
  the NF4 model plus one fused tensor in bf16. `quantize_experts` afterwards finds them
  quantised and only reports.
- `NF4Experts.forward` has the signature of transformers' experts modules: it loops over
  the experts the batch routes to, dequantises that expert inside bitsandbytes'
  `matmul_4bit` (which dequantises again in backward instead of keeping the bf16 matrix)
  and runs it. Experts no token routes to cost nothing.
- `add_expert_lora(model, r, alpha, ...)`: LoRA on the routed experts (`lora_on_experts`):
  per expert a rank-`r` pair for `gate_up_proj` and for `down_proj`, applied in the same
  forward. They live in an `ExpertLora` child (`...experts.expert_lora.lora_<proj>_{A,B}`),
  a PEFT tuner layer, so PEFT's `save_pretrained` writes them into the adapter, its
  `disable_adapter()` turns them off, and `PeftModel.from_pretrained` loads them back into
  a base model on which `add_expert_lora` was called first. Call it after `get_peft_model`
  (PEFT and `prepare_model_for_kbit_training` freeze what exists before them).
- `memory_report(model)` measures bytes per tensor group (routed experts, 4-bit linear
  layers, embeddings, lm_head, routers, LoRA, other), counting each storage once;
  `predict_footprint(model)` predicts the same groups for NF4 from the parameter shapes of
  an unquantised (e.g. meta-device) model, with `trainer.shared.moe_facts.nf4_bytes`.
- `build_random_nf4_model(config, device)` builds a model from a config with random
  weights directly in NF4, layer by layer from the meta device (benchmarks, no download).
- `peft_module_targets(active)`: a context for `get_peft_model` / `PeftModel.from_pretrained`
  on fused-expert models. peft 0.21 with transformers 5 rewrites every `gate_proj`,
  `up_proj`, `down_proj` target of such a model into LoRA on the routed-expert parameters
  (reading it as a transformers-4 adapter config), so the shared expert, a real module
  with those names, silently gets no LoRA (upstream: huggingface/peft issue 3711). Inside
  the context PEFT adapts exactly the modules named; routed experts are adapted by
  `add_expert_lora` instead.

Raises `ValueError` for an experts layout it cannot quantise (biases, interleaved
gate/up, a block size that splits an expert) and when meta weights come without a source.
"""

from trainer.moe.footprint import (
    build_random_nf4_model,
    memory_report,
    predict_config_footprint,
    predict_footprint,
)
from trainer.moe.lora import ExpertLora, add_expert_lora, peft_module_targets
from trainer.moe.nf4 import (
    BLOCKSIZE,
    PROJECTIONS,
    NF4Experts,
    StreamingNF4Experts,
    WeightSource,
    experts_load_in_nf4,
    is_fused_experts,
    nf4_experts,
    quantize_experts,
    route_to_experts,
)

__all__ = [
    "BLOCKSIZE",
    "PROJECTIONS",
    "ExpertLora",
    "NF4Experts",
    "StreamingNF4Experts",
    "WeightSource",
    "add_expert_lora",
    "build_random_nf4_model",
    "experts_load_in_nf4",
    "is_fused_experts",
    "memory_report",
    "nf4_experts",
    "peft_module_targets",
    "predict_config_footprint",
    "predict_footprint",
    "quantize_experts",
    "route_to_experts",
]
