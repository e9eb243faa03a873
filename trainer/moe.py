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

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import bitsandbytes as bnb
import bitsandbytes.functional as bnbF
import torch
from torch import nn

from trainer.shared.moe_facts import NESTED_BLOCKSIZE, nf4_bytes

BLOCKSIZE = 64
PROJECTIONS = ("gate_up_proj", "down_proj")

WeightSource = Callable[[str, nn.Module], tuple[torch.Tensor, torch.Tensor]]


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers experts module with 3-D `gate_up_proj` and `down_proj` parameters."""
    if isinstance(module, NF4Experts):
        return False
    gate_up = getattr(module, "gate_up_proj", None)
    down = getattr(module, "down_proj", None)
    return (
        isinstance(gate_up, torch.Tensor)
        and isinstance(down, torch.Tensor)
        and gate_up.dim() == 3
        and down.dim() == 3
    )


def _quantize_stack(w: torch.Tensor, blocksize: int) -> dict[str, torch.Tensor]:
    """NF4 + double quantisation of each w[e] (experts x out x in), as one batch.

    Equal, expert by expert, to `bitsandbytes.functional.quantize_4bit(w[e],
    blocksize=blocksize, compress_statistics=True, quant_type="nf4")`.
    """
    experts, out_f, in_f = w.shape
    numel = out_f * in_f
    if numel % blocksize or numel % 2:
        raise ValueError(
            f"an expert matrix of {out_f}x{in_f} does not split into blocks of {blocksize}; "
            "NF4 expert quantisation needs out*in divisible by the block size"
        )
    blocks = numel // blocksize
    nested = -(-blocks // NESTED_BLOCKSIZE)
    packed, absmax = torch.ops.bitsandbytes.quantize_4bit.default(
        w.reshape(-1).contiguous(), blocksize, "nf4", torch.uint8
    )
    absmax = absmax.float().view(experts, blocks)
    offset = absmax.mean(dim=1)
    centred = torch.zeros(experts, nested * NESTED_BLOCKSIZE, device=w.device)
    centred[:, :blocks] = absmax - offset[:, None]
    del absmax
    code = bnbF.create_dynamic_map().to(w.device)
    qabsmax, scale = torch.ops.bitsandbytes.quantize_blockwise.default(
        centred.view(-1), code, NESTED_BLOCKSIZE
    )
    return {
        "nf4": packed.view(experts, numel // 2),
        "absmax": qabsmax.view(experts, -1)[:, :blocks].contiguous(),
        "absmax_scale": scale.float().view(experts, nested),
        "absmax_offset": offset,
    }


_CODE_TABLES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _code_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The NF4 table (16 values) and the absmax table (256), one copy per device."""
    if device not in _CODE_TABLES:
        _CODE_TABLES[device] = (
            bnbF.get_4bit_type("nf4", device=device),
            bnbF.create_dynamic_map().to(device),
        )
    return _CODE_TABLES[device]


class NF4Experts(nn.Module):
    """Routed experts stored in NF4; a drop-in for transformers' fused experts module."""

    def __init__(
        self,
        num_experts: int,
        hidden_dim: int,
        intermediate_dim: int,
        act_fn: nn.Module,
        compute_dtype: torch.dtype = torch.bfloat16,
        blocksize: int = BLOCKSIZE,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.act_fn = act_fn
        self.compute_dtype = compute_dtype
        self.blocksize = blocksize
        self.shapes = {
            "gate_up_proj": torch.Size((2 * intermediate_dim, hidden_dim)),
            "down_proj": torch.Size((hidden_dim, intermediate_dim)),
        }
        for proj, shape in self.shapes.items():
            numel = shape.numel()
            blocks = numel // blocksize
            nested = -(-blocks // NESTED_BLOCKSIZE)
            # Not part of the state dict: the frozen base is never saved from here (the
            # adapter holds only LoRA), and a checkpoint's fused tensors load through
            # `load_projection_`.
            self._buffer(f"{proj}_nf4", (num_experts, numel // 2), torch.uint8, device)
            self._buffer(f"{proj}_absmax", (num_experts, blocks), torch.uint8, device)
            self._buffer(f"{proj}_absmax_scale", (num_experts, nested), torch.float32, device)
            self._buffer(f"{proj}_absmax_offset", (num_experts,), torch.float32, device)
        self._buffer("nf4_code", (16,), torch.float32, device)
        self._buffer("absmax_code", (256,), torch.float32, device)
        self.expert_lora: ExpertLora | None = None  # set by `add_expert_lora`

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> None:
        self.register_buffer(name, torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @classmethod
    def from_weights(
        cls,
        gate_up: torch.Tensor,
        down: torch.Tensor,
        act_fn: nn.Module,
        compute_dtype: torch.dtype = torch.bfloat16,
        blocksize: int = BLOCKSIZE,
        device: torch.device | str | None = None,
    ) -> NF4Experts:
        """Quantise full-precision experts (gate_up: E x 2I x H, down: E x H x I)."""
        experts, two_inter, hidden = gate_up.shape
        module = cls(experts, hidden, two_inter // 2, act_fn, compute_dtype, blocksize, device="meta")
        module.load_projection_("gate_up_proj", gate_up, device)
        module.load_projection_("down_proj", down, device)
        return module

    def load_projection_(
        self, proj: str, w: torch.Tensor, device: torch.device | str | None = None
    ) -> None:
        """Quantise one fused projection (experts x out x in) into this module's storage."""
        for name, value in self._quantized(proj, w, device).items():
            setattr(self, name, value)

    def _quantized(
        self, proj: str, w: torch.Tensor, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        device = torch.device(device) if device is not None else w.device
        if tuple(w.shape) != (self.num_experts, *self.shapes[proj]):
            raise ValueError(
                f"{proj} has shape {tuple(w.shape)}, expected "
                f"{(self.num_experts, *self.shapes[proj])}"
            )
        with torch.no_grad():
            q = _quantize_stack(w.detach().to(device), self.blocksize)
        out = {f"{proj}_{key}": value for key, value in q.items()}
        out["nf4_code"], out["absmax_code"] = _code_tables(device)
        return out

    def quant_state(self, proj: str, expert: int) -> bnbF.QuantState:
        """bitsandbytes' QuantState of one expert's matrix (views, no copy)."""
        nested = bnbF.QuantState(
            absmax=getattr(self, f"{proj}_absmax_scale")[expert],
            code=self.absmax_code,
            blocksize=NESTED_BLOCKSIZE,
            dtype=torch.float32,
        )
        return bnbF.QuantState(
            absmax=getattr(self, f"{proj}_absmax")[expert],
            shape=self.shapes[proj],
            code=self.nf4_code,
            blocksize=self.blocksize,
            quant_type="nf4",
            dtype=self.compute_dtype,
            offset=getattr(self, f"{proj}_absmax_offset")[expert],
            state2=nested,
        )

    def dequantize(self, proj: str, expert: int | None = None) -> torch.Tensor:
        """One expert's matrix (out x in), or all of them (experts x out x in), dequantised."""
        if expert is not None:
            packed = getattr(self, f"{proj}_nf4")[expert]
            return bnbF.dequantize_4bit(packed, self.quant_state(proj, expert))
        return torch.stack([self.dequantize(proj, e) for e in range(self.num_experts)])

    def _project(self, x: torch.Tensor, proj: str, expert: int) -> torch.Tensor:
        packed = getattr(self, f"{proj}_nf4")[expert]
        y = bnb.matmul_4bit(x, packed, quant_state=self.quant_state(proj, expert))
        if self.expert_lora is not None:
            y = self.expert_lora.add_delta(y, x, proj, expert)
        return y

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        return route_to_experts(
            hidden_states, top_k_index, top_k_weights, self.num_experts, self._project,
            self.act_fn, self.compute_dtype,
        )  # fmt: skip


def route_to_experts(
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    num_experts: int,
    project: Callable[[torch.Tensor, str, int], torch.Tensor],
    act_fn: Callable[[torch.Tensor], torch.Tensor],
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The routed-experts forward, running only the experts the batch hits:
    `project(x, proj, expert)` applies one expert's `gate_up_proj` or `down_proj`."""
    out = torch.zeros_like(hidden_states)
    x_all = hidden_states if compute_dtype is None else hidden_states.to(compute_dtype)
    with torch.no_grad():
        # one extra class: index == num_experts marks "no expert" (expert parallelism)
        mask = nn.functional.one_hot(top_k_index, num_classes=num_experts + 1)
        mask = mask.permute(2, 1, 0)  # experts x top_k x tokens
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist()
    for expert in hit:
        if expert == num_experts:
            continue
        top_k_pos, token_idx = torch.where(mask[expert])
        x = x_all[token_idx]
        gate, up = project(x, "gate_up_proj", expert).chunk(2, dim=-1)
        y = project(act_fn(gate) * up, "down_proj", expert)
        y = y * top_k_weights[token_idx, top_k_pos, None]
        out.index_add_(0, token_idx, y.to(out.dtype))
    return out

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, hidden={self.hidden_dim}, "
            f"intermediate={self.intermediate_dim}, nf4 blocksize={self.blocksize}, "
            f"compute_dtype={self.compute_dtype}"
        )


class StreamingNF4Experts(NF4Experts):
    """Takes the place of a model's fused-experts class while `from_pretrained` runs.

    Built from the model config like the original; exposes meta placeholders named
    `gate_up_proj` / `down_proj` for the loader to match checkpoint keys against, and
    quantises each fused tensor the moment the loader assigns it (on the device it arrives
    on), so the bf16 experts of more than one projection never exist at once. The NF4
    tensors are held aside until `commit()` (at the end of `experts_load_in_nf4`): the
    loader replaces every non-persistent buffer with an uninitialised one after loading.
    """

    default_compute_dtype = torch.bfloat16
    instances: list[StreamingNF4Experts] = []

    def __init__(self, config: Any) -> None:
        from transformers.activations import ACT2FN

        experts, hidden = config.num_experts, config.hidden_size
        inter = config.moe_intermediate_size
        super().__init__(experts, hidden, inter, ACT2FN[config.hidden_act],
                         self.default_compute_dtype, device="meta")
        self._loaded_projections: set[str] = set()
        self._pending: dict[str, torch.Tensor] = {}
        for name, buf in list(self.named_buffers(recurse=False)):  # empty until commit()
            self._buffer(name, (0,), buf.dtype, "meta")
        type(self).instances.append(self)
        placeholder = {"device": "meta", "dtype": torch.bfloat16}
        self.gate_up_proj = nn.Parameter(torch.empty(experts, 2 * inter, hidden, **placeholder), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(experts, hidden, inter, **placeholder), requires_grad=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in PROJECTIONS and isinstance(value, torch.Tensor) and not value.is_meta:
            self._pending.update(self._quantized(name, value))
            self._parameters.pop(name, None)
            self._loaded_projections.add(name)
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in self.__dict__.get("_loaded_projections", ()):
                raise
        # Loaded: the architecture's weight init still looks the projections up; it finds an
        # empty tensor marked initialised, and leaves it alone.
        stub = torch.empty(0, device="meta")
        stub._is_hf_initialized = True
        return stub

    def loaded(self) -> bool:
        return self._loaded_projections == set(PROJECTIONS)

    def commit(self) -> None:
        """Install the NF4 tensors quantised while loading as this module's storage."""
        if not self.loaded():
            missing = sorted(set(PROJECTIONS) - self._loaded_projections)
            raise ValueError(f"fused experts {missing} were not in the checkpoint")
        for name, value in self._pending.items():
            setattr(self, name, value)
        self._pending = {}


@contextmanager
def experts_load_in_nf4(model_type: str, compute_dtype: torch.dtype | None = None) -> Iterator[None]:
    """Within: `from_pretrained` of `model_type` builds its fused experts as NF4 storage.

    Peak memory while loading is the quantised model plus one fused expert tensor in
    bf16, instead of every expert in bf16 (~144 GiB for Qwen3-Next-80B-A3B). Raises
    ValueError for a model type whose modeling module has no fused-experts class.
    """
    import importlib

    modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    originals = {
        name: cls
        for name, cls in vars(modeling).items()
        if isinstance(cls, type) and issubclass(cls, nn.Module) and name.endswith("Experts")
        and not name.endswith("SparseMoeBlock")
    }
    if not originals:
        raise ValueError(f"transformers' {model_type} has no fused experts class to load in NF4")
    streaming = type(
        "StreamingNF4Experts",
        (StreamingNF4Experts,),
        {"default_compute_dtype": compute_dtype or torch.bfloat16, "instances": []},
    )
    for name in originals:
        setattr(modeling, name, streaming)
    try:
        yield
    finally:
        for name, cls in originals.items():
            setattr(modeling, name, cls)
    for module in streaming.instances:
        module.commit()
    streaming.instances.clear()


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

    def add(self, adapter: str, shapes: dict[str, torch.Size], experts: int, r: int,
            scaling: float, dropout: float, device: torch.device, dtype: torch.dtype) -> int:
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


def _compute_dtype(model: nn.Module) -> torch.dtype:
    qc = getattr(getattr(model, "config", None), "quantization_config", None)
    dtype = getattr(qc, "bnb_4bit_compute_dtype", None)
    if isinstance(qc, dict):
        dtype = qc.get("bnb_4bit_compute_dtype")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    return dtype if isinstance(dtype, torch.dtype) else torch.bfloat16


def _check_layout(name: str, module: nn.Module) -> None:
    if getattr(module, "has_bias", False) or not getattr(module, "has_gate", True):
        raise ValueError(f"{name}: experts with biases or without a gate are not supported in NF4")
    if not getattr(module, "is_concatenated", True):
        raise ValueError(f"{name}: interleaved gate/up experts are not supported in NF4")


def _oriented(module: nn.Module, gate_up: torch.Tensor, down: torch.Tensor):
    if getattr(module, "is_transposed", False):  # stored experts x in x out
        return gate_up.transpose(1, 2), down.transpose(1, 2)
    return gate_up, down


def quantize_experts(
    model: nn.Module,
    *,
    source: WeightSource | None = None,
    device: torch.device | str | None = None,
    compute_dtype: torch.dtype | None = None,
    blocksize: int = BLOCKSIZE,
) -> dict[str, Any]:
    """Replace every fused-experts module of `model` by `NF4Experts`, one layer at a time."""
    compute_dtype = compute_dtype or _compute_dtype(model)
    names = [n for n, m in model.named_modules() if is_fused_experts(m)]
    params = stored = 0
    seen: set[int] = set()
    already = [m for _, m in nf4_experts(model)]
    for module in already:  # quantised while loading (experts_load_in_nf4)
        params += sum(module.shapes[p].numel() for p in PROJECTIONS) * module.num_experts
        stored += _unique_bytes(module.buffers(recurse=False), seen)
    for name in names:
        module = model.get_submodule(name)
        _check_layout(name, module)
        if source is not None:
            gate_up, down = source(name, module)
        else:
            gate_up, down = module.gate_up_proj, module.down_proj
            if gate_up.is_meta:
                raise ValueError(
                    f"{name} is on the meta device: pass `source` to supply its weights"
                )
        gate_up, down = _oriented(module, gate_up, down)
        target = device if device is not None else (gate_up.device if not gate_up.is_meta else "cpu")
        new = NF4Experts.from_weights(gate_up, down, module.act_fn, compute_dtype, blocksize, target)
        del gate_up, down
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        del module
        params += sum(new.shapes[p].numel() for p in PROJECTIONS) * new.num_experts
        stored += _unique_bytes(new.buffers(), seen)
    return {
        "experts_quantized": bool(names or already),
        "expert_modules": len(names) + len(already),
        "experts_quantized_while_loading": len(already),
        "expert_params": params,
        "expert_bytes": stored,
        "expert_bits_per_param": round(8 * stored / params, 4) if params else None,
        "expert_quantization": f"nf4, double-quantised, blocksize {blocksize}, {compute_dtype}".replace(
            "torch.", ""
        ),
    }


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


def nf4_experts(model: nn.Module) -> Iterator[tuple[str, NF4Experts]]:
    for name, module in model.named_modules():
        if isinstance(module, NF4Experts):
            yield name, module


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
            adapter_name, module.shapes, module.num_experts, r, scaling, dropout,
            module.gate_up_proj_nf4.device, dtype,
        )
    return {
        "expert_lora_params": count,
        "expert_lora_bytes": count * torch.finfo(dtype).bits // 8,
        "expert_lora_modules": len(found),
    }


# ---------------------------------------------------------------- memory accounting


def _unique_bytes(tensors, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    total = 0
    for t in tensors:
        if t is None or t.is_meta:
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


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
    from trainer.shared.arch import capabilities

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
            _add(groups, "routed_experts", p, _unique_bytes(module.buffers(recurse=False), seen))
        for pname, param in module.named_parameters(recurse=False):
            if "lora_" in pname or "lora_" in name:
                _add(groups, "lora", param.numel(), _unique_bytes([param], seen))
            elif isinstance(param, bnb.nn.Params4bit) and param.quant_state is not None:
                qs = param.quant_state
                tensors = [param, *_quant_state_tensors(qs)]
                _add(groups, "linear_nf4", qs.shape.numel(), _unique_bytes(tensors, seen))
            else:
                _add(groups, _group_of(name, module, lm_head), param.numel(), _unique_bytes([param], seen))
        if not isinstance(module, NF4Experts):
            rest = _unique_bytes(module.buffers(recurse=False), seen)
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
            quantized = isinstance(module, nn.Linear) and module is not lm_head and not _kept(name, keep)
            if quantized and pname == "weight":
                _add(groups, "linear_nf4", param.numel(), nf4_bytes(param.numel(), BLOCKSIZE) + tables)
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
                new.bias = nn.Parameter(torch.zeros(module.out_features, device=device, dtype=torch.bfloat16))
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
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
    model.is_loaded_in_4bit = True  # what prepare_model_for_kbit_training looks for
    return model
