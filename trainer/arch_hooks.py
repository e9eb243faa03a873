"""The architecture hooks of the model loader (`trainer.model.load_for_training`): what an
`ArchCaps` entry (`trainer.shared.arch`) asks for, done on the model.

- `load_context(spec, caps, compute_dtype)` wraps `from_pretrained`: for fused experts in
  nf4, each expert tensor is quantised as it is loaded (`trainer.moe.nf4.experts_load_in_nf4`),
  so a model whose bf16 experts exceed the GPU (Qwen3-Next: ~144 GiB) loads at its NF4
  size; `post_load` then finds them quantised.
- `post_load(model, spec, caps)` runs right after `from_pretrained`, before k-bit
  preparation and LoRA. For architectures with fused 3-D expert tensors and `nf4` it hands
  the model to `trainer.moe.nf4.quantize_experts` (bitsandbytes quantises only
  `nn.Linear`); for hybrid linear-attention models it makes those layers honour sample
  boundaries (`trainer.packing_hybrid`). The returned dict is reported in the `started`
  event's model facts.
- `post_lora(model, spec, caps)` runs right after `get_peft_model`: LoRA on the routed
  experts when the spec asks for it (`trainer.moe.lora.add_expert_lora`).

The MoE and hybrid modules import torch and bitsandbytes, so they are imported where a
model needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from trainer.shared.arch import ArchCaps
from trainer.shared.errors import BadInput


def load_context(spec: Any, caps: ArchCaps, compute_dtype: Any = None) -> Any:
    """A context manager for the model loader to wrap `from_pretrained` in."""
    if caps.fused_experts and caps.experts_quantized and spec.quantization == "nf4":
        from trainer.moe.nf4 import experts_load_in_nf4

        return experts_load_in_nf4(caps.model_type, compute_dtype)
    return nullcontext()


def post_load(model: Any, spec: Any, caps: ArchCaps) -> dict[str, Any]:
    """Architecture-specific work right after loading; returns facts for `started`."""
    facts: dict[str, Any] = {}
    if caps.hybrid_linear_attention:
        from trainer.packing_hybrid import enable_sequence_boundaries  # torch at import

        facts.update(enable_sequence_boundaries(model))
    if caps.fused_experts and spec.quantization == "nf4":
        from trainer.moe.nf4 import quantize_experts  # written for fused-expert MoE models

        result = quantize_experts(model)
        facts["experts_quantized"] = True
        if isinstance(result, Mapping):
            facts.update(result)
    return facts


def post_lora(model: Any, spec: Any, caps: ArchCaps) -> dict[str, Any]:
    """Architecture-specific work right after `get_peft_model`; returns facts for `started`.

    With `lora_on_experts` on a model whose experts `post_load` quantised, adds trainable
    LoRA to every routed expert (`trainer.moe.lora.add_expert_lora`); PEFT saves it with the
    adapter. Raises `BadInput` when experts were asked for but cannot be adapted.
    """
    if not spec.lora.lora_on_experts or not caps.fused_experts:
        return {}
    if spec.quantization != "nf4":
        raise BadInput(
            f"LoRA on the routed experts of {caps.model_type} needs quantization 'nf4' "
            f"(got {spec.quantization!r})",
            "turn lora_on_experts off, or use quantization nf4",
        )
    from trainer.moe.lora import add_expert_lora

    return add_expert_lora(
        model,
        r=spec.lora.r,
        alpha=spec.lora.alpha,
        dropout=spec.lora.dropout,
        use_rslora=spec.lora.use_rslora,
    )
