"""GRPO: group-normalised advantages and the clipped policy loss, as TRL 1.16's GRPOTrainer.

`advantages(rewards, group, scale)`: the completions of one prompt are consecutive, `group`
of them; each advantage is its reward minus its group's mean, divided by the standard
deviation (unbiased) + 1e-4 of its group (`scale` "group"), of the whole batch ("batch"),
or not divided ("none"). A reward that is NaN (no grader could score it) is left out of
the mean and gets advantage 0.

`policy_loss(logps, old, ref, adv, mask, s, ...)`: per completion token, with ratio r =
exp(logps - old) (old: the log-probabilities the completions were sampled with; None: the
current ones, detached, as with one update per generation), the clipped term
-min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A), plus beta times the KL estimate
exp(ref - logps) - (ref - logps) - 1 to the reference (beta > 0 only; times r with
`bias_correction_kl`, TRL's default, so its gradient is the unbiased reverse-KL one). The token terms are
reduced as `loss_type` says:

    grpo     mean over each completion's tokens, then over completions; / grad_accum
    bnpo     mean over all the micro-batch's completion tokens; / grad_accum
    dr_grpo  sum / (completions x max_completion_length); / grad_accum
    dapo     sum / the completion tokens of the whole optimizer step (`step_tokens`)

Returns the micro-batch's share of the step's loss and its metrics: `kl` (mean over
tokens, when beta > 0), `clip_ratio` (share of tokens whose ratio was clipped where it
mattered: below 1 - epsilon with A < 0 or above 1 + epsilon_high with A > 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


@dataclass(frozen=True)
class GrpoSettings:
    loss_type: LossType = "dapo"
    epsilon: float = 0.2
    epsilon_high: float | None = None  # None: epsilon
    beta: float = 0.0
    max_completion_length: int = 256
    scale_rewards: Literal["group", "batch", "none"] = "group"
    bias_correction_kl: bool = True  # the KL term times the ratio (unbiased reverse-KL gradient)


def advantages(rewards: Any, group: int, scale: str = "group") -> Any:
    """Group-normalised advantages of `rewards` ([completions], see the module docstring)."""
    import torch

    grouped = rewards.view(-1, group)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group)
    if scale == "batch":
        std = _nanstd(rewards).expand_as(rewards)
    else:
        std = _nanstd(grouped, dim=1).repeat_interleave(group)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


def _nanstd(x: Any, dim: int | None = None) -> Any:
    """Unbiased standard deviation ignoring NaNs (TRL's `nanstd`)."""
    import torch

    mean = torch.nanmean(x, dim=dim, keepdim=dim is not None)
    var = torch.nanmean((x - mean) ** 2, dim=dim)
    count = torch.sum(~torch.isnan(x), dim=dim)
    return torch.sqrt(var * count / (count - 1))


def policy_loss(
    logps: Any,
    old: Any | None,
    ref: Any | None,
    adv: Any,
    mask: Any,
    s: GrpoSettings,
    *,
    grad_accum: int = 1,
    step_tokens: int | None = None,
) -> tuple[Any, dict[str, float]]:
    """(this micro-batch's share of the step's loss, metrics); tensors are [completions,
    tokens] (`adv` [completions]); see the module docstring."""
    import torch

    mask = mask.to(logps.dtype)
    old = logps.detach() if old is None else old
    a = adv.unsqueeze(1) if adv.dim() == 1 else adv
    low, high = s.epsilon, s.epsilon if s.epsilon_high is None else s.epsilon_high
    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - low, 1 + high)
    per_token = -torch.min(ratio * a, clipped * a)
    metrics: dict[str, float] = {}
    if s.beta != 0.0:
        kl = torch.exp(ref - logps) - (ref - logps) - 1
        if s.bias_correction_kl:
            kl = kl * ratio
        per_token = per_token + s.beta * kl
        metrics["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1.0))
    tokens = mask.sum().clamp(min=1.0)
    if s.loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / grad_accum
    elif s.loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens / grad_accum
    elif s.loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * s.max_completion_length)
        loss = loss / grad_accum
    else:
        loss = (per_token * mask).sum() / max(step_tokens or int(tokens), 1)
    was_clipped = ((ratio < 1 - low) & (a < 0)) | ((ratio > 1 + high) & (a > 0))
    metrics["clip_ratio"] = float((was_clipped.to(mask.dtype) * mask).sum() / tokens)
    return loss, metrics
