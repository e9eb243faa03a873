"""Adapters with LoRA on the routed experts (`lora.lora_on_experts`): finding, loading, merging.

Training puts a rank-r pair per routed expert into an `ExpertLora` child of each fused
experts module (`trainer.moe.add_expert_lora`); PEFT saves them into
`adapter_model.safetensors` as `base_model.model.<experts module>.expert_lora.lora_<proj>_{A,B}`
(A: experts x r x in, B: experts x out x r, for `gate_up_proj` and `down_proj`). Those
tensor names are the marker: an adapter has routed-expert LoRA exactly when its weights hold
them (read from the safetensors header only), whatever its `brightrun.json` says; rank and
scaling come from the tensors' shapes and `adapter_config.json` (`lora_alpha`, `r`,
`use_rslora`, the values training passed to `add_expert_lora` as well).

- `read_expert_lora(folder)`: an `ExpertLoraInfo` (modules, rank, scaling), or None for an
  adapter without expert LoRA.
- `add_expert_lora_structure(model, info, adapter_name)`: before `PeftModel.from_pretrained`,
  gives every experts module the adapter names a `ExpertLora` for `adapter_name`: a plain
  (16/32-bit) fused experts module is wrapped in `LoraFusedExperts` (same forward, plus each
  expert's LoRA delta), NF4 experts get theirs through `add_expert_lora`. Raises `BadInput`
  when the model has no fused experts where the adapter has LoRA (another base).
- `merge_expert_lora(model)`: folds every `LoraFusedExperts`' active adapter into its fused
  tensors, W_e += scaling * B_e A_e (transposed for experts stored in x out), and puts the
  plain experts module back: the model has no expert LoRA modules left.
- `ExpertLoraNeedsMerge` (a `BadInput`): what loading such an adapter without the structure
  raises (vLLM's multi-LoRA and the local inference server cannot apply it per request).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.moe.lora import ExpertLora
from trainer.moe.nf4 import NF4Experts, is_fused_experts, route_to_experts
from trainer.shared.errors import BadInput

WEIGHTS = "adapter_model.safetensors"
MARK = ".expert_lora.lora_"
PREFIX = "base_model.model."
NEEDS_MERGE = (
    "this adapter adapts the routed experts; vLLM cannot serve it as a LoRA — merge it "
    "(`brightrun adapters merge REF`) and serve the merged model"
)


class ExpertLoraNeedsMerge(BadInput):
    """An adapter with routed-expert LoRA was loaded where only standard LoRA can be served."""

    def __init__(self, adapter: str) -> None:
        super().__init__(
            f"adapter {adapter}: {NEEDS_MERGE}",
            "merge the adapter into its base model and serve the merged model",
        )


@dataclass(frozen=True)
class ExpertLoraInfo:
    modules: tuple[str, ...]  # experts module paths in the base model
    r: int
    alpha: float
    use_rslora: bool

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r


def read_expert_lora(folder: str | Path) -> ExpertLoraInfo | None:
    """The routed-expert LoRA an adapter folder holds, or None (see the module docstring)."""
    from safetensors import safe_open

    folder = Path(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        return None
    modules: dict[str, None] = {}
    rank = None
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            if MARK not in key:
                continue
            modules[key.removeprefix(PREFIX).split(MARK)[0]] = None
            if key.endswith("_A") and rank is None:
                rank = int(f.get_slice(key).get_shape()[1])
    if not modules:
        return None
    cfg = json.loads((folder / "adapter_config.json").read_text())
    r = rank or int(cfg["r"])
    return ExpertLoraInfo(
        tuple(modules), r, float(cfg.get("lora_alpha", r)), bool(cfg.get("use_rslora", False))
    )


class LoraFusedExperts(nn.Module):
    """A 16/32-bit fused experts module with per-expert LoRA (`expert_lora`) in its forward.

    `base` is the original module (left as it is); the forward is transformers' expert loop
    with each projection's LoRA delta added, as `NF4Experts` does on quantised experts.
    """

    def __init__(self, base: Any) -> None:
        super().__init__()
        if not is_fused_experts(base):
            raise TypeError(f"{type(base).__name__} is not a fused experts module")
        self.base = base
        self.num_experts = base.gate_up_proj.shape[0]
        self.expert_lora = ExpertLora()

    @property
    def transposed(self) -> bool:
        return bool(getattr(self.base, "is_transposed", False))  # stored experts x in x out

    def weight(self, proj: str, expert: int) -> torch.Tensor:
        """One expert's matrix, out x in."""
        w = getattr(self.base, proj)[expert]
        return w.t() if self.transposed else w

    @property
    def shapes(self) -> dict[str, torch.Size]:
        return {p: torch.Size(self.weight(p, 0).shape) for p in ("gate_up_proj", "down_proj")}

    def _project(self, x: torch.Tensor, proj: str, expert: int) -> torch.Tensor:
        y = nn.functional.linear(x, self.weight(proj, expert))
        return self.expert_lora.add_delta(y, x, proj, expert)

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        return route_to_experts(
            hidden_states,
            top_k_index,
            top_k_weights,
            self.num_experts,
            self._project,
            self.base.act_fn,
        )

    def merge_into_base(self) -> nn.Module:
        """Fold the active adapters into `base`'s fused tensors and return `base`."""
        lora = self.expert_lora
        with torch.no_grad():
            for adapter in lora.active_adapters:
                for proj in ("gate_up_proj", "down_proj"):
                    a = getattr(lora, f"lora_{proj}_A")
                    if adapter not in a:
                        continue
                    b = getattr(lora, f"lora_{proj}_B")[adapter]
                    delta = torch.bmm(b.float(), a[adapter].float()) * lora.scaling[adapter]
                    w = getattr(self.base, proj)
                    if self.transposed:
                        delta = delta.transpose(1, 2)
                    w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
        return self.base


def _set_submodule(model: Any, name: str, module: Any) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def add_expert_lora_structure(
    model: Any, info: ExpertLoraInfo, adapter_name: str = "default"
) -> int:
    """Give every experts module `info` names an `ExpertLora` for `adapter_name`; returns
    how many. Call on the base model, before the adapter is loaded."""
    count = 0
    for name in info.modules:
        try:
            module = model.get_submodule(name)
        except AttributeError as e:
            raise BadInput(
                f"the adapter has routed-expert LoRA on {name!r}, which this base model lacks",
                "use the adapter with the base model it was trained on",
            ) from e
        if isinstance(module, NF4Experts):
            if module.expert_lora is None:
                module.expert_lora = ExpertLora()
            target, shapes, device = module, module.shapes, module.gate_up_proj_nf4.device
        else:
            if is_fused_experts(module):
                module = LoraFusedExperts(module)
                _set_submodule(model, name, module)
            if not isinstance(module, LoraFusedExperts):
                raise BadInput(
                    f"the adapter has routed-expert LoRA on {name!r}, which is no fused "
                    "experts module in this base model",
                    "use the adapter with the base model it was trained on",
                )
            target, shapes, device = module, module.shapes, module.base.gate_up_proj.device
        target.expert_lora.add(
            adapter_name,
            shapes,
            target.num_experts,
            info.r,
            info.scaling,
            0.0,
            device,
            torch.float32,
        )
        count += 1
    return count


def has_expert_lora_structure(model: Any, info: ExpertLoraInfo, adapter_name: str) -> bool:
    """Whether every experts module `info` names has an `ExpertLora` for `adapter_name`."""
    prefix = PREFIX if hasattr(model, "peft_config") else ""
    for name in info.modules:
        try:
            module = model.get_submodule(prefix + name)
        except AttributeError:
            return False
        lora = getattr(module, "expert_lora", None)
        if lora is None or adapter_name not in lora.lora_gate_up_proj_A:
            return False
    return True


def merge_expert_lora(model: Any) -> int:
    """Fold every `LoraFusedExperts` into plain fused experts (see the module docstring);
    returns how many experts modules were merged."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraFusedExperts)]
    for name, module in wrapped:
        _set_submodule(model, name, module.merge_into_base())
    return len(wrapped)
