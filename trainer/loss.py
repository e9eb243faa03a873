"""The training loss: summed cross-entropy over a batch's loss-bearing positions.

The decoder runs on the whole batch; the output layer only on the positions that carry a
label, fused with the loss (`trainer.kernels`). Models whose logits need more than the
output layer (soft-capping, logit scaling) take the plain full-logits path.
"""

from __future__ import annotations

from typing import Any

from trainer import data as D


def batch_loss_sum(model: Any, batch: D.Batch, device: Any, compute_dtype: Any) -> Any:
    """Summed cross-entropy over the batch's loss-bearing positions (a 0-d float32 tensor)."""
    import torch

    from trainer.kernels import chunked_cross_entropy, linear_cross_entropy

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flat_targets = batch.targets.reshape(-1)
    keep = (flat_targets != D.IGNORE).nonzero().squeeze(1)
    targets = flat_targets.index_select(0, keep)
    cfg = base.config
    autocast = compute_dtype != torch.float32
    with torch.autocast(device.type, dtype=compute_dtype, enabled=autocast):
        if getattr(cfg, "final_logit_softcapping", None) or hasattr(cfg, "logit_scale"):
            logits = base(**batch.model_kwargs(), use_cache=False).logits
            picked = logits.reshape(-1, logits.shape[-1]).index_select(0, keep).float()
            return torch.nn.functional.cross_entropy(picked, targets, reduction="sum")
        hidden = base.get_decoder()(**batch.model_kwargs(), use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)
        head = base.get_output_embeddings()
        if type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
            return linear_cross_entropy(hidden, head.weight, targets, compute_dtype)
        return chunked_cross_entropy(hidden, head, targets)
