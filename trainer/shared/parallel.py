"""How a job spreads over its GPUs: the one rule both the planner and the worker apply.

A job with `gpus` > 1 runs one process per GPU (torchrun) under PyTorch's FSDP2
(`torch.distributed.fsdp.fully_shard`). `sharding` says what is sharded:

- `fsdp`: the frozen base weights, the LoRA weights, their gradients and the optimizer
  state are all sharded across the GPUs (each holds 1/gpus of each); a layer's weights are
  gathered for its forward and backward. The way to train a base that does not fit on one
  GPU. An NF4 (QLoRA) base is sharded the same way, as the FSDP+QLoRA recipes do: its packed
  4-bit weights are stored in float32 elements (bitsandbytes' `quant_storage`, 8 weights
  to an element; `trainer.model.build_quantization_config`), which FSDP2 shards like any
  float tensor, and each layer's quantisation state (absmax, code) stays whole on every GPU
  beside it (bitsandbytes' `Linear4bit` finds it on its module when FSDP hands it the
  gathered weight). Fused routed experts that `trainer.moe` stores in NF4 are buffers,
  which FSDP2 does not shard: whole on every GPU. Checked on the CPU with 2 gloo
  processes: each holds half the packed bytes, a gathered layer is bit-identical to the
  unsharded one, and the job trains what one process trains, and resumes as it does
  (`tests/trainer/test_multi_gpu.py`); on GPUs (NCCL) not measured yet
  (`bench/multi_gpu.py --quantization nf4`).
- `ddp`: plain data parallel for the base: every GPU holds the whole frozen base (nothing
  to gather per layer, no communication for frozen weights); the LoRA weights, gradients
  and optimizer state are still sharded by FSDP2 (they are small either way).
- `auto` (the spec's default) is `choose(...)` below: `ddp` for bases of at most
  `DDP_MAX_BASE_BYTES` as loaded (an NF4 base counted at its 4-bit size) and for 8-bit
  (int8) bases (their bitsandbytes weights are int8 tensors, with no float storage to
  choose, and FSDP2 shards floating-point tensors only); `fsdp` otherwise.

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
    """(`single` | `fsdp` | `ddp`, why) for a job on `gpus` GPUs; `base_weight_bytes`: the
    base as loaded (an NF4 base at its 4-bit size)."""
    if gpus <= 1:
        return "single", "one GPU: nothing to shard"
    if sharding != "auto":
        return sharding, f"sharding {sharding} set in the job"
    gib = base_weight_bytes / (1 << 30)
    if quantization == "int8":
        return "ddp", (
            f"the int8 base ({gib:.1f} GiB) is replicated on each GPU: FSDP2 shards "
            "bitsandbytes' 4-bit weights (stored as float32), not its 8-bit ones"
        )
    what = "the base's" if quantization == "none" else f"the {quantization} base's"
    if base_weight_bytes <= DDP_MAX_BASE_BYTES:
        return "ddp", (
            f"{what} {gib:.1f} GiB fit on every GPU: replicating them costs no "
            "communication, while sharding would gather every layer twice a step"
        )
    return "fsdp", f"{what} {gib:.1f} GiB are sharded: each GPU holds 1/{gpus} of them"
