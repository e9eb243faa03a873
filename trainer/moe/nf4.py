"""Routed experts stored in NF4: the module, its streaming load, and the quantiser.

See `trainer.moe` for the whole picture. `NF4Experts` (forward with the signature of
transformers' experts modules), `StreamingNF4Experts` with `experts_load_in_nf4` (quantise
while `from_pretrained` loads), and `quantize_experts` (replace every fused-experts module,
one layer at a time). Raises `ValueError` for an experts layout it cannot quantise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import bitsandbytes as bnb
import bitsandbytes.functional as bnbF
import torch
from torch import nn

from trainer.shared.moe_facts import NESTED_BLOCKSIZE

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
        self.expert_lora: nn.Module | None = None  # an `ExpertLora`, set by `add_expert_lora`

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
        module = cls(
            experts, hidden, two_inter // 2, act_fn, compute_dtype, blocksize, device="meta"
        )
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
            hidden_states,
            top_k_index,
            top_k_weights,
            self.num_experts,
            self._project,
            self.act_fn,
            self.compute_dtype,
        )


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
        super().__init__(
            experts,
            hidden,
            inter,
            ACT2FN[config.hidden_act],
            self.default_compute_dtype,
            device="meta",
        )
        self._loaded_projections: set[str] = set()
        self._pending: dict[str, torch.Tensor] = {}
        for name, buf in list(self.named_buffers(recurse=False)):  # empty until commit()
            self._buffer(name, (0,), buf.dtype, "meta")
        type(self).instances.append(self)
        placeholder = {"device": "meta", "dtype": torch.bfloat16}
        self.gate_up_proj = nn.Parameter(
            torch.empty(experts, 2 * inter, hidden, **placeholder), requires_grad=False
        )
        self.down_proj = nn.Parameter(
            torch.empty(experts, hidden, inter, **placeholder), requires_grad=False
        )

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
def experts_load_in_nf4(
    model_type: str, compute_dtype: torch.dtype | None = None
) -> Iterator[None]:
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
        if isinstance(cls, type)
        and issubclass(cls, nn.Module)
        and name.endswith("Experts")
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
        stored += unique_bytes(module.buffers(recurse=False), seen)
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
        target = (
            device if device is not None else (gate_up.device if not gate_up.is_meta else "cpu")
        )
        new = NF4Experts.from_weights(
            gate_up, down, module.act_fn, compute_dtype, blocksize, target
        )
        del gate_up, down
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        del module
        params += sum(new.shapes[p].numel() for p in PROJECTIONS) * new.num_experts
        stored += unique_bytes(new.buffers(), seen)
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


def nf4_experts(model: nn.Module) -> Iterator[tuple[str, NF4Experts]]:
    for name, module in model.named_modules():
        if isinstance(module, NF4Experts):
            yield name, module


def unique_bytes(tensors, seen: set[int] | None = None) -> int:
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
