"""Memory accounting of NF4 models, measured and predicted, and random NF4 models.

See `trainer.moe`. `memory_report(model)` measures bytes per tensor group;
`predict_footprint(model)` predicts them from an unquantised (e.g. meta) model;
`build_random_nf4_model(config, device)` builds random weights directly in NF4.
"""

from __future__ import annotations

from typing import Any

import bitsandbytes as bnb
import torch
from torch import nn

from trainer.moe.nf4 import BLOCKSIZE, NF4Experts, is_fused_experts, quantize_experts, unique_bytes
from trainer.shared.arch import capabilities
from trainer.shared.moe_facts import nf4_bytes


def _quant_state_tensors(qs: Any) -> list[torch.Tensor]:
    out = [qs.absmax, qs.code]
    if getattr(qs, "offset", None) is not None:
        out.append(qs.offset)
    if getattr(qs, "state2", None) is not None:
        out += [qs.state2.absmax, qs.state2.code]
    return [t for t in out if isinstance(t, torch.Tensor)]


def _group_of(name: str, module: nn.Module, lm_head: nn.Module | None) -> str:
    if module is lm_head:
        return "lm_head"
    if isinstance(module, nn.Embedding):
        return "embeddings"
    if type(module).__name__.endswith("Router") or name.endswith(("mlp.gate", "expert_gate")):
        return "router"
    return "other"


def _kept(name: str, keep_full_precision: tuple[str, ...]) -> bool:
    """Whether a module stays unquantised (name ends with one of the fragments)."""
    return any(name == k or name.endswith("." + k) for k in keep_full_precision)


def _keep_of(model: nn.Module) -> tuple[str, ...]:
    config = getattr(model, "config", None)
    return capabilities(config).keep_full_precision if config is not None else ()


def _empty_groups() -> dict[str, dict[str, float]]:
    return {}


def _add(groups: dict, group: str, params: int, nbytes: int) -> None:
    g = groups.setdefault(group, {"params": 0, "bytes": 0})
    g["params"] += params
    g["bytes"] += nbytes


def _finish(groups: dict) -> dict[str, dict[str, float]]:
    total_p = sum(g["params"] for g in groups.values())
    total_b = sum(g["bytes"] for g in groups.values())
    groups["total"] = {"params": total_p, "bytes": total_b}
    for g in groups.values():
        g["bits_per_param"] = round(8 * g["bytes"] / g["params"], 4) if g["params"] else None
    return groups


def memory_report(model: nn.Module) -> dict[str, dict[str, float]]:
    """Measured bytes per tensor group, each storage counted once.

    Groups: routed_experts (NF4Experts storage), linear_nf4 (bitsandbytes Linear4bit
    weights with their quantisation constants), lora (trainable parameters), embeddings,
    lm_head, router, other (norms, convolutions, biases, buffers). `params` counts the
    logical (unquantised) parameters.
    """
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    seen: set[int] = set()
    groups = _empty_groups()
    for name, module in model.named_modules():
        if isinstance(module, NF4Experts):
            p = module.num_experts * sum(s.numel() for s in module.shapes.values())
            _add(groups, "routed_experts", p, unique_bytes(module.buffers(recurse=False), seen))
        for pname, param in module.named_parameters(recurse=False):
            if "lora_" in pname or "lora_" in name:
                _add(groups, "lora", param.numel(), unique_bytes([param], seen))
            elif isinstance(param, bnb.nn.Params4bit) and param.quant_state is not None:
                qs = param.quant_state
                tensors = [param, *_quant_state_tensors(qs)]
                _add(groups, "linear_nf4", qs.shape.numel(), unique_bytes(tensors, seen))
            else:
                _add(
                    groups,
                    _group_of(name, module, lm_head),
                    param.numel(),
                    unique_bytes([param], seen),
                )
        if not isinstance(module, NF4Experts):
            rest = unique_bytes(module.buffers(recurse=False), seen)
            if rest:
                _add(groups, "other", 0, rest)
    return _finish(groups)


def predict_footprint(
    model: nn.Module, quantization: str = "nf4", keep_full_precision: tuple[str, ...] | None = None
) -> dict[str, dict[str, float]]:
    """Predicted bytes per group for `model` (unquantised, any device incl. meta) in NF4.

    Mirrors what loading with bitsandbytes NF4 plus `quantize_experts` stores: every
    `nn.Linear` but the lm_head and the architecture's `keep_full_precision` modules in NF4
    (plus its 16- and 256-entry fp32 code tables), every fused expert tensor in NF4 expert
    by expert, everything else in its own dtype.
    """
    if quantization != "nf4":
        raise ValueError(f"predict_footprint covers nf4 only (got {quantization!r})")
    keep = _keep_of(model) if keep_full_precision is None else keep_full_precision
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tables = 4 * (16 + 256)  # bitsandbytes keeps one pair of fp32 code tables per Linear4bit
    groups = _empty_groups()
    expert_tables = tables  # NF4Experts share one pair per device
    for name, module in model.named_modules():
        if is_fused_experts(module):
            experts = module.gate_up_proj.shape[0]
            p = b = 0
            for w in (module.gate_up_proj, module.down_proj):
                per = w.shape[1] * w.shape[2]
                p += experts * per
                b += experts * nf4_bytes(per, BLOCKSIZE)
            _add(groups, "routed_experts", p, b + expert_tables)
            expert_tables = 0
            continue
        for pname, param in module.named_parameters(recurse=False):
            quantized = (
                isinstance(module, nn.Linear) and module is not lm_head and not _kept(name, keep)
            )
            if quantized and pname == "weight":
                _add(
                    groups,
                    "linear_nf4",
                    param.numel(),
                    nf4_bytes(param.numel(), BLOCKSIZE) + tables,
                )
            else:
                group = _group_of(name, module, lm_head)
                _add(groups, group, param.numel(), param.numel() * param.element_size())
        for buf in module.buffers(recurse=False):
            _add(groups, "other", 0, buf.numel() * buf.element_size())
    return _finish(groups)


def predict_config_footprint(config: Any) -> dict[str, dict[str, float]]:
    """`predict_footprint` of the architecture `config` describes, built on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return predict_footprint(model)


# ---------------------------------------------------------------- random NF4 models


def build_random_nf4_model(
    config: Any,
    device: torch.device | str,
    *,
    seed: int = 0,
    compute_dtype: torch.dtype = torch.bfloat16,
    std: float | None = None,
) -> nn.Module:
    """A model for `config` with random weights stored as a QLoRA load stores them.

    Built on the meta device, then materialised module by module on `device`: `nn.Linear`
    (but the lm_head and `keep_full_precision`) as bitsandbytes `Linear4bit` NF4, fused
    experts as `NF4Experts`, the rest in bf16 with the architecture's own initialisation. Peak memory is the
    quantised model plus one layer's experts in bf16.
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    std = std if std is not None else getattr(config, "initializer_range", 0.02)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    lm_head = model.get_output_embeddings()
    keep = _keep_of(model)
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.bfloat16) * std

    def source(name: str, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return randn(*module.gate_up_proj.shape), randn(*module.down_proj.shape)

    quantize_experts(model, source=source, device=device, compute_dtype=compute_dtype)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and module is not lm_head and not _kept(name, keep):
            parent_name, _, child = name.rpartition(".")
            new = _random_linear4bit(module, randn, device, compute_dtype)
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    _materialise_the_rest(model, device)
    model.is_loaded_in_4bit = True  # what prepare_model_for_kbit_training looks for
    return model


def _random_linear4bit(
    module: nn.Linear, randn: Any, device: torch.device, compute_dtype: torch.dtype
) -> nn.Module:
    """A bitsandbytes NF4 `Linear4bit` of `module`'s shape with random weights, on `device`."""
    new = bnb.nn.Linear4bit(
        module.in_features,
        module.out_features,
        bias=module.bias is not None,
        compute_dtype=compute_dtype,
        compress_statistics=True,
        quant_type="nf4",
        device="meta",
    )
    new.weight = bnb.nn.Params4bit(
        randn(module.out_features, module.in_features),
        requires_grad=False,
        blocksize=BLOCKSIZE,
        compress_statistics=True,
        quant_type="nf4",
        module=new,
    )._quantize(device)
    if module.bias is not None:
        new.bias = nn.Parameter(
            torch.zeros(module.out_features, device=device, dtype=torch.bfloat16)
        )
    return new


def _materialise_the_rest(model: nn.Module, device: torch.device) -> None:
    """Every module still on the meta device, on `device` with the architecture's init."""
    quantized = (NF4Experts, bnb.nn.Linear4bit)
    fresh = set()
    for name, module in model.named_modules():
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if not isinstance(module, quantized) and any(t.is_meta for t in own):
            module.to_empty(device=device, recurse=False)
            fresh.add(name)
    # Initialise what was materialised, and its parents: some inits live on the parent
    # (an MoE block initialises its router's weight).
    parents = {name.rpartition(".")[0] for name in fresh}
    for name, module in model.named_modules():
        if (name in fresh or name in parents) and not isinstance(module, quantized):
            model._init_weights(module)
