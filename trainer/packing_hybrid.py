"""Packing for hybrid models: linear-attention layers that restart at every sample.

A Gated DeltaNet layer (Qwen3-Next, Qwen3.5) runs a causal conv1d and a recurrence over the
whole row, so in a packed row sample k+1 starts from sample k's conv window and recurrent
state; restarting position ids fixes the softmax-attention layers only. transformers
5.24 hands `cu_seq_lens_q` to the chunked kernel only when flash-linear-attention is
installed, never to the conv1d, and its PyTorch fallbacks refuse boundaries outright.

`enable_sequence_boundaries(model)` makes every linear-attention layer honour sample
boundaries with any kernel: the layer runs once per sample (segment) of each row, each from
a zero conv and recurrent state, exactly as if that sample were alone in the batch (same
shapes, same code), and the outputs are put back in place. Projections, norms and the
MoE blocks stay batched over the whole row.

Where the boundaries come from, first match wins:
1. `seq_idx` (batch x tokens, sample index) or `cu_seq_lens_q` (cumulative lengths of a
   one-row batch, the flash-attention varlen convention) passed to the model's forward;
2. the position ids: a new sample starts wherever a position is not the previous one
   plus 1, the same rule transformers uses to build the block-diagonal mask of the
   softmax-attention layers from packed position ids.
With a cache (generation) or without any of these, the layer runs unchanged. A 2-D
attention mask, when given, is applied per segment as usual (padding zeroed).

Idempotent; returns facts for the `started` event.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

SEGMENTS_KWARG = "brightrun_segment_ids"


def _linear_attention_layers(model: nn.Module):
    for module in model.modules():
        if (
            getattr(module, "layer_type", None) == "linear_attention"
            or getattr(module, "block_type", None) == "linear_attention"
        ):
            mixer = getattr(module, "linear_attn", None)
            if isinstance(mixer, nn.Module):
                yield module, mixer


def segment_ids_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Sample index of every token (batch x tokens) from packed position ids."""
    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)


def _segment_ids_from_cu(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    lengths = torch.diff(cu_seqlens.to(torch.long))
    ids = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    if ids.numel() != length:
        raise ValueError(f"cu_seq_lens_q covers {ids.numel()} tokens but the row has {length}")
    return ids[None]


def _spans(ids: torch.Tensor) -> list[tuple[int, int]]:
    change = (torch.diff(ids) != 0).nonzero().flatten().add(1).tolist()
    starts = [0, *change]
    ends = [*change, ids.numel()]
    return list(zip(starts, ends, strict=True))


def _layer_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """On a decoder layer: turn packed position ids into segment ids for its linear attention."""
    if SEGMENTS_KWARG in kwargs or kwargs.get("cache") is not None:
        return None
    if kwargs.get("seq_idx") is not None or kwargs.get("cu_seq_lens_q") is not None:
        return None  # explicit boundaries travel to the mixer as they are
    position_ids = kwargs.get("position_ids")
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[-1] < 2:
        return None
    ids = segment_ids_from_positions(position_ids)
    if not bool((ids[:, -1] > 0).any()):
        return None  # one sample per row: nothing to separate
    kwargs = dict(kwargs)
    kwargs[SEGMENTS_KWARG] = ids
    return args, kwargs


def _segmented_forward(self: nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
    ids = kwargs.pop(SEGMENTS_KWARG, None)
    seq_idx = kwargs.pop("seq_idx", None)
    cu = kwargs.get("cu_seq_lens_q")
    cache = kwargs.get("cache", args[0] if args else None)
    if seq_idx is not None:
        ids = seq_idx
    elif cu is not None and hidden_states.shape[0] == 1:
        ids = _segment_ids_from_cu(cu, hidden_states.shape[1])
    if ids is None or cache is not None:
        return self._brightrun_unsegmented_forward(hidden_states, *args, **kwargs)
    for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
        kwargs.pop(key, None)
    mask = kwargs.pop("attention_mask", args[1] if len(args) > 1 else None)
    rest = {k: v for k, v in kwargs.items() if k != "cache"}
    if ids.shape[0] != hidden_states.shape[0]:
        ids = ids.expand(hidden_states.shape[0], -1)
    rows = []
    for b in range(hidden_states.shape[0]):
        pieces = [
            self._brightrun_unsegmented_forward(
                hidden_states[b : b + 1, s:e],
                cache=None,
                attention_mask=None if mask is None else mask[b : b + 1, s:e],
                **rest,
            )
            for s, e in _spans(ids[b])
        ]
        rows.append(torch.cat(pieces, dim=1))
    return torch.cat(rows, dim=0)


def enable_sequence_boundaries(model: nn.Module) -> dict[str, Any]:
    """Make every linear-attention layer of `model` restart at sample boundaries."""
    layers = 0
    for layer, mixer in _linear_attention_layers(model):
        layers += 1
        if getattr(mixer, "_brightrun_unsegmented_forward", None) is not None:
            continue
        mixer._brightrun_unsegmented_forward = mixer.forward
        mixer.forward = types.MethodType(_segmented_forward, mixer)
        layer.register_forward_pre_hook(_layer_pre_hook, with_kwargs=True)
    return {
        "linear_attention_layers": layers,
        "linear_attention_boundaries": "per-sample segments (conv1d and recurrent state reset)"
        if layers
        else None,
    }
