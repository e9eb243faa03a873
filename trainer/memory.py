"""How many decoder layers to recompute (activation checkpointing), from measured memory.

With `gradient_checkpointing` on and `checkpoint_layers: as_needed`, the trainer measures
what one token's activations cost, once at setup: a forward pass of a short dummy
sequence counts the bytes autograd keeps for backward, with every layer recomputed and
with none, at two lengths (the per-token slope, so per-call constants cancel out). A
micro-batch of `micro_batch_size x max_length` tokens then needs

    tokens x (kept_with_all_recomputed + layers_kept x per_layer_kept)

and as many layers as fit in the memory budget keep their activations (the last layers,
whose backward comes first); the others are recomputed. The budget is 60% of the memory
free after loading (CUDA: free device memory less 2 GiB of headroom; CPU: available RAM).
If a step still runs out of memory, the trainer recomputes every layer from then on
(`recompute_all`). With `checkpoint_layers: all`, every layer is recomputed, as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BUDGET_SHARE = 0.6
CUDA_HEADROOM = 2 << 30


def checkpoint_layers(model: Any) -> list[Any]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def _set(layers: list[Any], recompute: list[bool]) -> None:
    for layer, flag in zip(layers, recompute, strict=True):
        layer.gradient_checkpointing = flag


def _saved_bytes(model: Any, forward: Callable[[int], Any], tokens: int) -> int:
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params and st.device.type != "meta":
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward(tokens)
    del out
    return sum(seen.values())


def free_memory(device: Any) -> int:
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return max(0, free + cached - CUDA_HEADROOM)
    import psutil

    return int(psutil.virtual_memory().available)


def plan_recompute(
    model: Any,
    forward: Callable[[int], Any],
    *,
    tokens_per_micro_batch: int,
    hidden_size: int,
    device: Any,
    probe: tuple[int, int] = (64, 128),
) -> dict[str, Any]:
    """Set each layer's checkpointing flag; returns what was decided and why."""
    layers = checkpoint_layers(model)
    n = len(layers)
    if n == 0:
        return {"layers": 0, "layers_recomputed": 0, "reason": "no checkpointable layers"}
    t1, t2 = probe
    _set(layers, [False] * n)
    keep_all = (_saved_bytes(model, forward, t2) - _saved_bytes(model, forward, t1)) / (t2 - t1)
    _set(layers, [True] * n)
    ckpt_all = (_saved_bytes(model, forward, t2) - _saved_bytes(model, forward, t1)) / (t2 - t1)
    elem = 2  # layer inputs kept by a recomputed layer, in the 16-bit compute dtype
    ckpt_all += n * hidden_size * elem
    per_layer = max(0.0, (keep_all - ckpt_all) / n)
    budget = int(BUDGET_SHARE * free_memory(device))
    need_min = tokens_per_micro_batch * ckpt_all
    kept = 0
    if per_layer > 0:
        kept = int(max(0.0, budget - need_min) // (tokens_per_micro_batch * per_layer))
    kept = min(n, kept)
    _set(layers, [i < n - kept for i in range(n)])
    return {
        "layers": n,
        "layers_recomputed": n - kept,
        "activation_bytes_per_token_all_recomputed": int(ckpt_all),
        "activation_bytes_per_token_per_kept_layer": int(per_layer),
        "tokens_per_micro_batch": tokens_per_micro_batch,
        "budget_bytes": budget,
        "reason": (
            f"{kept} of {n} layers keep their activations within {BUDGET_SHARE:.0%} of the "
            "memory free after loading; the rest are recomputed"
        ),
    }


def recompute_all(model: Any) -> int:
    layers = checkpoint_layers(model)
    _set(layers, [True] * len(layers))
    return len(layers)
