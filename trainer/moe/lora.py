"""LoRA on the routed experts of `NF4Experts` (`lora_on_experts`), as a PEFT tuner layer.

See `trainer.moe`. `add_expert_lora` attaches an `ExpertLora` child to every NF4 experts
module; `peft_module_targets` keeps PEFT from rewriting expert-named targets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from trainer.moe.nf4 import nf4_experts


def _tuner_layer_base() -> type:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


class ExpertLora(nn.Module, _tuner_layer_base()):
    """Per-expert LoRA pairs of one `NF4Experts`, as a PEFT tuner layer.

    `lora_<proj>_A[adapter]` is experts x r x in, `lora_<proj>_B[adapter]` experts x out x r;
    the delta for expert e is `B[e] @ A[e] * scaling`. PEFT finds it structurally: saves
    its parameters, and `disable_adapter()` / `set_adapter()` reach it.
    """

    adapter_layer_names = (
        "lora_gate_up_proj_A",
        "lora_gate_up_proj_B",
        "lora_down_proj_A",
        "lora_down_proj_B",
    )
    other_param_names = ("r", "scaling", "dropout")

    def __init__(self) -> None:
        super().__init__()
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ParameterDict())
        self.r: dict[str, int] = {}
        self.scaling: dict[str, float] = {}
        self.dropout: dict[str, float] = {}
        self._active_adapter = "default"
        self._disable_adapters = False
        self.merged_adapters: list[str] = []

    def add(
        self,
        adapter: str,
        shapes: dict[str, torch.Size],
        experts: int,
        r: int,
        scaling: float,
        dropout: float,
        device: torch.device,
        dtype: torch.dtype,
    ) -> int:
        count = 0
        for proj, (out_f, in_f) in shapes.items():
            bound = 1.0 / math.sqrt(in_f)  # PEFT's Kaiming-uniform start for A; B starts at 0
            a = torch.empty(experts, r, in_f, device=device, dtype=dtype).uniform_(-bound, bound)
            b = torch.zeros(experts, out_f, r, device=device, dtype=dtype)
            getattr(self, f"lora_{proj}_A")[adapter] = nn.Parameter(a)
            getattr(self, f"lora_{proj}_B")[adapter] = nn.Parameter(b)
            count += a.numel() + b.numel()
        self.r[adapter], self.scaling[adapter], self.dropout[adapter] = r, scaling, dropout
        self._active_adapter = adapter
        return count

    def add_delta(self, y: torch.Tensor, x: torch.Tensor, proj: str, expert: int) -> torch.Tensor:
        if self.disable_adapters:
            return y
        lora_a, lora_b = getattr(self, f"lora_{proj}_A"), getattr(self, f"lora_{proj}_B")
        for adapter in self.active_adapters:
            if adapter not in lora_a:
                continue
            a, b = lora_a[adapter][expert], lora_b[adapter][expert]
            h = x.to(a.dtype)
            if self.training and self.dropout[adapter]:
                h = nn.functional.dropout(h, p=self.dropout[adapter])
            y = y + ((h @ a.t()) @ b.t() * self.scaling[adapter]).to(y.dtype)
        return y

    def merge(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("LoRA on NF4 experts cannot be merged into the 4-bit weights")

    def unmerge(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("LoRA on NF4 experts is never merged")


@contextmanager
def peft_module_targets(active: bool = True) -> Iterator[None]:
    """Within: PEFT targets the modules named in `target_modules`, never fused experts."""
    if not active:
        yield
        return
    from peft.utils import transformers_weight_conversion as conversion

    original = conversion.convert_peft_config_for_transformers

    def keep_targets(peft_config: Any, model: Any, conversions: Any) -> None:
        return None

    conversion.convert_peft_config_for_transformers = keep_targets
    try:
        yield
    finally:
        conversion.convert_peft_config_for_transformers = original


def add_expert_lora(
    model: nn.Module,
    r: int,
    alpha: float,
    *,
    dropout: float = 0.0,
    use_rslora: bool = False,
    adapter_name: str = "default",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Attach trainable LoRA to the routed experts of every `NF4Experts`; returns facts.

    A starts like PEFT's (Kaiming-uniform), B at zero, so the model is unchanged until
    trained. Raises ValueError when the model has no quantised experts.
    """
    found = list(nf4_experts(model))
    if not found:
        raise ValueError("LoRA on experts needs quantised experts: call quantize_experts first")
    scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
    count = 0
    for _, module in found:
        if module.expert_lora is None:
            module.expert_lora = ExpertLora()
        count += module.expert_lora.add(
            adapter_name,
            module.shapes,
            module.num_experts,
            r,
            scaling,
            dropout,
            module.gate_up_proj_nf4.device,
            dtype,
        )
    return {
        "expert_lora_params": count,
        "expert_lora_bytes": count * torch.finfo(dtype).bits // 8,
        "expert_lora_modules": len(found),
    }
