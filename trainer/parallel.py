"""One training process of several (one per GPU): the process group and FSDP2.

Each process of a multi-GPU job (started by torchrun, see `trainer.rank`) builds a
`Group` from torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, the rendezvous
address): NCCL on CUDA, gloo on the CPU, and every collective bounded by the worker's
`collective_timeout_s`, so a rank that stops answering makes the others raise instead of
waiting for ever.

`shard(loaded, group, strategy)` applies `torch.distributed.fsdp.fully_shard` in place:
each decoder layer is one FSDP unit, then the decoder. `fsdp` shards every parameter of
those units; `ddp` leaves the frozen base weights out of FSDP (each process keeps its whole
copy) and shards the trainable ones. The embedding and output head are never sharded
(the loss reads the head's weight directly, and small models tie the two). A 4-bit
base (bitsandbytes, loaded with float32 `quant_storage` for `fsdp`, see
`trainer.model.build_quantization_config`) is sharded like any other: FSDP hands each
`Linear4bit` its gathered weight as a plain tensor, and bitsandbytes restores the layer's
quantisation state from the module, where `shard` puts it (and moves it to the GPU: it
stays whole on each). Activation checkpointing stays as set on each layer before
sharding. The model may come loaded in host memory (an FSDP job on GPUs:
`trainer.model.load_for_training(on_cpu=True)`): FSDP moves each GPU's shards to it, and
what FSDP does not manage (embeddings, head, buffers outside its units) is moved after.

`local_share(group, batches)` deals a step's micro-batches round-robin: (batch, scale)
pairs, the same number on every rank (a rank short of batches runs one of the step's
with scale 0, so every rank takes part in the same collectives). `scale` = the group's
size undoes FSDP's averaging of gradients over ranks: each rank's loss is its share of
the step's mean, and the step's gradient is their sum.

`local_base_bytes(model)`: the frozen base's bytes held by this process.

`full_trainable_state(model)` gathers the trainable weights to rank 0 (other ranks get an
empty dict); every rank must call it. Raises torch's own errors; `peer_lost(exc)` says
whether an error is a collective failing because another rank did.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("brightrun.trainer")


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    device_type: str  # "cuda" or "cpu"
    strategy: str = "single"  # "fsdp" or "ddp" once `shard` ran
    reason: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, value: Any) -> Any:
        """`value` (a tensor) summed over the ranks."""
        import torch.distributed as dist

        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (every rank must ask)."""
        import torch
        import torch.distributed as dist

        device = _current_cuda() if self.device_type == "cuda" else torch.device("cpu")
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def facts(self) -> dict[str, Any]:
        return {"gpus": self.world, "sharding": self.strategy, "sharding_reason": self.reason}


def init_group(
    timeout_s: float, environ: Mapping[str, str] | None = None, *, cpu: bool = False
) -> Group:
    """This process's group from torchrun's environment (see the module docstring); `cpu`:
    gloo on the CPU even where CUDA is available (a spec's `device: cpu`)."""
    import torch
    import torch.distributed as dist

    env = os.environ if environ is None else environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    cuda = torch.cuda.is_available() and not cpu
    if cuda:
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")))
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        timeout=datetime.timedelta(seconds=timeout_s),
        **({"device_id": torch.device("cuda", torch.cuda.current_device())} if cuda else {}),
    )
    return Group(rank=rank, world=world, device_type="cuda" if cuda else "cpu")


def close_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def decoder_layers(model: Any) -> tuple[Any, list[Any]]:
    """(the decoder, its layers) of a PEFT causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    return decoder, list(decoder.layers)


def shard(model: Any, group: Group, strategy: str, reason: str) -> Group:
    """FSDP2 on `model` in place (see the module docstring); returns the group with its
    strategy."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(group.device_type, (group.world,))
    quantised = _quantised(model)
    for m in quantised:  # where bitsandbytes finds it when FSDP hands it a gathered weight
        m.quant_state = m.weight.quant_state
    decoder, layers = decoder_layers(model)
    base = model.get_base_model()
    never = {
        p
        for m in (base.get_input_embeddings(), base.get_output_embeddings())
        for p in m.parameters()
    }
    for unit in [*layers, decoder]:
        own = set(unit.parameters())
        ignored = own & never
        if strategy == "ddp":
            ignored |= {p for p in own if not p.requires_grad}
        fully_shard(unit, mesh=mesh, ignored_params=ignored or None, reshard_after_forward=True)
    device = torch.device("cpu") if group.device_type == "cpu" else _current_cuda()
    for p in never:  # FSDP moved what it shards to the device; the rest follows (a CPU load)
        if p.device != device:
            p.data = p.data.to(device)
    for m in model.modules():  # buffers of modules outside the FSDP units (rotary tables)
        for name, buf in list(m.named_buffers(recurse=False)):
            if buf is not None and buf.device != device:
                setattr(m, name, buf.to(device))
    for m in quantised:  # each layer's quantisation state, whole on every GPU
        m.quant_state.to(device)
    log.info("rank %d of %d: %s (%s)", group.rank, group.world, strategy, reason)
    return Group(group.rank, group.world, group.device_type, strategy, reason)


def _quantised(model: Any) -> list[Any]:
    """The modules whose own weight is bitsandbytes' 4-bit (it carries a `quant_state`)."""
    return [
        m
        for m in model.modules()
        if getattr(m._parameters.get("weight"), "quant_state", None) is not None
    ]


def local_base_bytes(model: Any) -> int:
    """Bytes of the frozen base this process holds: its shards of what FSDP shards, the
    whole of the rest, buffers included (`trainer.moe`'s NF4 experts are buffers, whole on
    every GPU); a 4-bit weight counts its packed bytes, not its quantisation state."""
    total = sum(b.numel() * b.element_size() for b in model.buffers())
    for p in model.parameters():
        if p.requires_grad:
            continue
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total


def _current_cuda() -> Any:
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def local_share(group: Group | None, batches: list[Any]) -> list[tuple[Any, float]]:
    """This rank's micro-batches of a step, with their loss scale (module docstring)."""
    if group is None or group.world == 1:
        return [(b, 1.0) for b in batches]
    mine = [(b, float(group.world)) for b in batches[group.rank :: group.world]]
    per_rank = -(-len(batches) // group.world)
    while len(mine) < per_rank:
        mine.append((batches[0], 0.0))
    return mine


def full_trainable_state(model: Any) -> dict[str, Any]:
    """The trainable weights, whole, on rank 0 (CPU); {} on the others. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=opts)


def scalar(value: Any) -> float:
    """A (possibly distributed) 0-d tensor as a float."""
    full = value.full_tensor() if hasattr(value, "full_tensor") else value
    return float(full)


def peer_lost(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing (another rank died or stopped answering)."""
    import torch.distributed as dist

    return isinstance(exc, dist.DistError)
