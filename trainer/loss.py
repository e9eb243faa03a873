"""The training losses' model side: the output layer on a batch's loss-bearing positions.

The decoder runs on the whole batch; the output layer only on the positions that carry a
label, fused with the loss (`trainer.kernels`). Models whose logits need more than the
output layer (soft-capping, logit scaling) take the plain full-logits path.

- `batch_loss_sum`: summed cross-entropy (SFT).
- `token_logps`: each labelled position's log-probability of its target, and where the
  positions are in the flattened batch (preference tuning sums them per sequence).
"""

from __future__ import annotations

from typing import Any

from trainer import data as D


def _kept_targets(batch: D.Batch) -> tuple[Any, Any]:
    flat_targets = batch.targets.reshape(-1)
    keep = (flat_targets != D.IGNORE).nonzero().squeeze(1)
    return keep, flat_targets.index_select(0, keep)


def _full_logits(base: Any) -> bool:
    cfg = base.config
    return bool(getattr(cfg, "final_logit_softcapping", None) or hasattr(cfg, "logit_scale"))


def _kept_hidden(base: Any, batch: D.Batch, keep: Any) -> Any:
    hidden = base.get_decoder()(**batch.model_kwargs(), use_cache=False).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)


def _frozen_linear(head: Any) -> bool:
    import torch

    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def batch_loss_sum(model: Any, batch: D.Batch, device: Any, compute_dtype: Any) -> Any:
    """Summed cross-entropy over the batch's loss-bearing positions (a 0-d float32 tensor)."""
    import torch

    from trainer.kernels import chunked_cross_entropy, linear_cross_entropy

    base = _base(model)
    keep, targets = _kept_targets(batch)
    autocast = compute_dtype != torch.float32
    with torch.autocast(device.type, dtype=compute_dtype, enabled=autocast):
        if _full_logits(base):
            logits = base(**batch.model_kwargs(), use_cache=False).logits
            picked = logits.reshape(-1, logits.shape[-1]).index_select(0, keep).float()
            return torch.nn.functional.cross_entropy(picked, targets, reduction="sum")
        hidden = _kept_hidden(base, batch, keep)
        head = base.get_output_embeddings()
        if _frozen_linear(head):
            return linear_cross_entropy(hidden, head.weight, targets, compute_dtype)
        return chunked_cross_entropy(hidden, head, targets)


def token_logps(
    model: Any, batch: D.Batch, device: Any, compute_dtype: Any, pick: tuple[Any, Any] | None = None
) -> tuple[Any, Any]:
    """(log-probability of each labelled position's target, float32; the positions' indices
    in the flattened batch). `pick` = (positions, targets) names them instead of the
    batch's `targets` (a position may predict several targets: shared prompts)."""
    import torch

    from trainer.kernels import chunked_token_logps, linear_token_logps

    base = _base(model)
    keep, targets = pick if pick is not None else _kept_targets(batch)
    autocast = compute_dtype != torch.float32
    with torch.autocast(device.type, dtype=compute_dtype, enabled=autocast):
        if _full_logits(base):
            logits = base(**batch.model_kwargs(), use_cache=False).logits
            picked = logits.reshape(-1, logits.shape[-1]).index_select(0, keep).float()
            logps = torch.log_softmax(picked, -1).gather(1, targets[:, None]).squeeze(1)
            return logps, keep
        hidden = _kept_hidden(base, batch, keep)
        head = base.get_output_embeddings()
        if _frozen_linear(head):
            return linear_token_logps(hidden, head.weight, targets, compute_dtype), keep
        return chunked_token_logps(hidden, head, targets), keep
