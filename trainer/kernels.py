"""The two pieces of the training step BrightRun computes itself.

`varlen_sdpa_attention` - attention over a padding-free row of several samples: causal
attention inside each sample, none across samples, from the sequence boundaries
(`cu_seq_lens_q`, as flash-attention varlen takes them). It runs PyTorch's SDPA once per
sample, so it costs what the samples cost, not (row length)^2 as a block-diagonal mask
over the whole row would. Registered as the attention implementation `brightrun_varlen`;
used where flash-attention is not installed (CPU, or a GPU image without it). A 2-D
padding mask is handled the same way (each row's real tokens as one sample); with a KV
cache (generation: fewer queries than keys) it becomes a 4-D mask (the keys' padding and
the causal order of the new queries) for plain SDPA; anything else (a 4-D mask) goes to
plain SDPA as it is. A row laid out with shared prompts (`brightrun_pairs`: a
preference pair's prompt once for both answers, `trainer.preference`; a GRPO prompt once
for its group of completions, `trainer.grpo`) goes to `shared_prompt_attention`.

`linear_token_logps` - each labelled position's log-probability of its target (preference
tuning sums them per sequence), computed in chunks of rows so the vocabulary-wide logits
never exist all at once; the gradient with respect to the hidden states is computed in the
same pass (no logits kept for backward, no recomputation). Used when the output layer is a
frozen plain `nn.Linear` (the LoRA case); otherwise `chunked_token_logps` calls the module.

`linear_cross_entropy` / `chunked_cross_entropy` - the summed next-token loss over the
positions that carry a label (SFT): minus the sum of those log-probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

ATTN_IMPLEMENTATION = "brightrun_varlen"
_registered = False


def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    gqa = query.shape[1] != key.shape[1]
    pairs = kwargs.get("brightrun_pairs")
    if pairs is not None and query.shape[0] == 1 and key.shape[2] == query.shape[2]:
        out = shared_prompt_attention(query, key, value, pairs, dropout, scaling)
        return out.transpose(1, 2).contiguous(), None

    def causal(s: int, e: int, b: slice) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            query[b, :, s:e],
            key[b, :, s:e],
            value[b, :, s:e],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
            enable_gqa=gqa,
        )

    cu = kwargs.get("cu_seq_lens_q")
    q_len = query.shape[2]
    if attention_mask is not None and attention_mask.dim() == 2 and key.shape[2] == q_len:
        return _padded_rows(attention_mask, query, causal), None
    if attention_mask is not None and attention_mask.dim() == 2:  # a KV cache: decoding
        attention_mask, is_causal = cached_padding_mask(attention_mask, q_len, key.shape[2]), False
    if cu is None or attention_mask is not None or query.shape[0] != 1 or key.shape[2] != q_len:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    bounds = cu.tolist()
    outs = [
        causal(s, e, slice(None)) for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _padded_rows(mask: torch.Tensor, query: torch.Tensor, causal: Any) -> torch.Tensor:
    """A 2-D padding mask (as for flash-attention): each row's real tokens are one
    contiguous run; attend within it, leave the padding's output at zero."""
    out = torch.zeros_like(query)
    for b, row in enumerate(mask.bool()):
        idx = row.nonzero()
        if len(idx):
            s, e = int(idx[0]), int(idx[-1]) + 1
            out[b : b + 1, :, s:e] = causal(s, e, slice(b, b + 1))
    return out.transpose(1, 2).contiguous()


def cached_padding_mask(mask: torch.Tensor, q_len: int, kv_len: int) -> torch.Tensor:
    """A 2-D padding mask [batch, keys] as the 4-D boolean mask [batch, 1, queries, keys]
    of the last `q_len` positions over `kv_len` cached keys: a query sees the real keys up
    to its own position."""
    keys = mask[:, :kv_len].bool()
    pos = torch.arange(kv_len, device=mask.device)
    last = kv_len - q_len + torch.arange(q_len, device=mask.device)
    return keys[:, None, None, :] & (pos[None, :] <= last[:, None])[None, None]


def shared_prompt_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: list[tuple[int, ...]],
    dropout: float = 0.0,
    scaling: float | None = None,
) -> torch.Tensor:
    """Attention over one row of prompts each followed by its answers, laid out as
    [shared][first tail][second tail]... (`layout`: start, shared, then each tail's length;
    a preference pair has two tails, chosen and rejected, a GRPO group one per completion).
    The shared prefix and the first tail are one causal sequence; every further tail
    attends to the shared prefix and, causally, to itself: the attention each sequence
    would get alone. [1, heads, row, dim]."""
    gqa = query.shape[1] != key.shape[1]
    outs = []
    for start, k, first, *rest in layout:
        a, b = start, start + k + first
        outs.append(
            F.scaled_dot_product_attention(
                query[:, :, a:b],
                key[:, :, a:b],
                value[:, :, a:b],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
                enable_gqa=gqa,
            )
        )
        for n in rest:
            if n:
                outs.append(_tail_attention(query, key, value, (a, k, b, n), dropout, scaling))
            b += n
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _tail_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    where: tuple[int, int, int, int],
    dropout: float,
    scaling: float | None,
) -> torch.Tensor:
    """A tail of `n` tokens at `b` over the shared prefix (`k` tokens at `a`) and itself."""
    a, k, b, n = where
    keys = torch.cat([key[:, :, a : a + k], key[:, :, b : b + n]], dim=2)
    values = torch.cat([value[:, :, a : a + k], value[:, :, b : b + n]], dim=2)
    # query i of the tail sees the whole prefix and tail tokens 0..i
    mask = torch.ones(n, k + n, dtype=torch.bool, device=query.device).tril(k)
    return F.scaled_dot_product_attention(
        query[:, :, b : b + n],
        keys,
        values,
        attn_mask=mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )


def register_attention() -> str:
    """Register `brightrun_varlen` with transformers (idempotent); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

        AttentionInterface.register(ATTN_IMPLEMENTATION, varlen_sdpa_attention)
        # Like flash-attention: no 4-D mask; a 2-D padding mask only when there is padding.
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, flash_attention_mask)
        _registered = True
    return ATTN_IMPLEMENTATION


def _chunk_rows(vocab: int, budget_elems: int = 1 << 26) -> int:
    """Rows per chunk so that one chunk's float32 logits stay near 256 MiB."""
    return max(64, budget_elems // max(vocab, 1))


class _LinearTokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, compute_dtype, need_grad):  # noqa: D401
        w = weight.to(compute_dtype)
        n = hidden.shape[0]
        step = _chunk_rows(w.shape[0])
        acc = torch.promote_types(compute_dtype, torch.float32)
        out = torch.empty(n, dtype=acc, device=hidden.device)  # float32 unless float64
        grad_h = torch.empty_like(hidden) if need_grad else None
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            for i in range(0, n, step):
                h = hidden[i : i + step].to(compute_dtype)
                t = targets[i : i + step]
                logits = (h @ w.t()).to(acc)
                lse = torch.logsumexp(logits, dim=-1)
                out[i : i + step] = logits.gather(1, t[:, None]).squeeze(1) - lse
                if need_grad:  # d logp / d h = w[t] - softmax @ w
                    probs = torch.exp(logits.sub_(lse[:, None]))
                    probs[torch.arange(probs.shape[0], device=probs.device), t] -= 1.0
                    grad_h[i : i + step] = (-(probs.to(compute_dtype) @ w)).to(hidden.dtype)
        if need_grad:
            ctx.save_for_backward(grad_h)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype)[:, None], None, None, None, None


def linear_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    compute_dtype: torch.dtype,
) -> torch.Tensor:
    """Log-probability of each row's target under `hidden @ weight.T` (one per row; float32,
    float64 for a float64 compute dtype), in chunks, the gradient with respect to `hidden`
    computed in the same pass. `weight` must be frozen."""
    if weight.requires_grad:
        raise ValueError("the fused output-layer kernels need a frozen output weight")
    need_grad = torch.is_grad_enabled() and hidden.requires_grad
    return _LinearTokenLogps.apply(hidden, weight, targets, compute_dtype, need_grad)


def chunked_token_logps(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor
) -> torch.Tensor:
    """Log-probability of each row's target under `head(hidden)`, in chunks, any module."""
    step = _chunk_rows(int(getattr(head, "out_features", 0) or 32768))
    parts = []
    for i in range(0, hidden.shape[0], step):
        logits = head(hidden[i : i + step]).float()
        t = targets[i : i + step]
        parts.append(logits.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(logits, -1))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    compute_dtype: torch.dtype,
) -> torch.Tensor:
    """Sum of cross-entropy of `hidden @ weight.T` against `targets` (rows: positions):
    minus the summed log-probabilities of `linear_token_logps`, so the vocabulary-wide
    logits never exist all at once and the gradient comes from the same pass.
    `weight` must be frozen (its gradient is not computed)."""
    return -linear_token_logps(hidden, weight, targets, compute_dtype).sum()


def chunked_cross_entropy(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor
) -> torch.Tensor:
    """Sum of cross-entropy of `head(hidden)`, in chunks, for any output module."""
    return -chunked_token_logps(hidden, head, targets).sum()
