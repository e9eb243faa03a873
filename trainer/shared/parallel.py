"""How a job spreads over its GPUs: the one rule both the planner and the worker apply.

A job with `gpus` > 1 runs one process per GPU (torchrun) under PyTorch's FSDP2
(`torch.distributed.fsdp.fully_shard`). `sharding` says what is sharded:

- `fsdp`: the frozen base weights, the LoRA weights, their gradients and the optimizer
  state are all sharded across the GPUs (each holds 1/gpus of each); a layer's weights are
  gathered for its forward and backward. The way to train a base that does not fit on one
  GPU.
- `ddp`: plain data parallel for the base: every GPU holds the whole frozen base (nothing
  to gather per layer, no communication for frozen weights); the LoRA weights, gradients
  and optimizer state are still sharded by FSDP2 (they are small either way).
- `auto` (the spec's default) is `choose(...)` below: `ddp` for quantised bases (FSDP2
  shards plain tensors, not bitsandbytes' packed 4-bit/8-bit weights with their
  quantisation state) and for bases of at most `DDP_MAX_BASE_BYTES`; `fsdp` otherwise.

The global batch does not depend on the GPU count: an optimizer step is
`training.grad_accum` micro-batches of `training.micro_batch_size` rows, dealt round-robin
to the GPUs (GPU r takes micro-batches r, r + gpus, ...), and its loss is the mean over
the loss-bearing tokens of all of them. A run on 2 GPUs therefore takes the same steps as
the same spec on one; it is faster when `grad_accum` is a multiple of `gpus`.

Torch-free: imports nothing heavy, so `core.planner` can use it.
"""

from __future__ import annotations

from typing import Literal

Sharding = Literal["auto", "fsdp", "ddp"]
MAX_GPUS = 8
DDP_MAX_BASE_BYTES = 8 << 30  # a replicated base this small costs less than gathering it


def choose(
    gpus: int, sharding: Sharding, quantization: str, base_weight_bytes: float
) -> tuple[str, str]:
    """(`single` | `fsdp` | `ddp`, why) for a job on `gpus` GPUs."""
    if gpus <= 1:
        return "single", "one GPU: nothing to shard"
    if sharding != "auto":
        return sharding, f"sharding {sharding} set in the job"
    gib = base_weight_bytes / (1 << 30)
    if quantization != "none":
        return "ddp", (
            f"the {quantization} base ({gib:.1f} GiB) is replicated on each GPU: FSDP2 shards "
            "plain tensors, not bitsandbytes' packed quantised weights"
        )
    if base_weight_bytes <= DDP_MAX_BASE_BYTES:
        return "ddp", (
            f"the base's {gib:.1f} GiB fit on every GPU: replicating them costs no "
            "communication, while sharding would gather every layer twice a step"
        )
    return "fsdp", f"the base's {gib:.1f} GiB are sharded: each GPU holds 1/{gpus} of them"
