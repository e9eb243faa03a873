"""GRPO's sampling: `num_generations` completions of each prompt of a micro-batch.

What is drawn (`SampleSettings`): GRPO samples from the policy at the spec's temperature
among its `POLICY_TOP_K` (50) likeliest tokens, no top-p, no repetition penalty, up to
`max_completion_length` new tokens, each completion ending at its first stop token (the
end of turn), which it keeps. Top-k 50 is what transformers' `generate` applies when
nothing sets it, which GRPO jobs have always sampled with; the sampling fields a model's
own `generation_config.json` suggests for chat (top-p, repetition penalty) are not applied,
on either backend. Temperature 0 is greedy (tests compare against `generate` that way).

Two backends with one call, `sample(prompts, n, settings) -> completions` (token ids; a
prompt's `n` completions consecutive, in the prompts' order):

- `LeanSampler` (the model being trained, any device): what transformers'
  `generate(do_sample=True, num_return_sequences=n)` computes, without its per-token
  machinery. The prompts are prefilled once, left-padded, on the last position only; the
  KV cache of each prompt is then repeated for its `n` completions (`generate` prefills
  every prompt `n` times). Each decode step runs the model on the rows' last tokens with
  the cache, takes the float32 logits, warps them as `generate`'s processors do
  (temperature, then top-k, then top-p) and draws one token per row with
  `torch.multinomial` from the global generator, as `generate` does; a finished row is fed
  padding, as in `generate`, and the loop ends when every row has stopped. Positions come
  from the padding mask as in `generate`. So with the same seed the tokens are
  `generate`'s (tests: greedy, and sampled at a fixed seed).
- `trainer.grpo_vllm.VllmSampler`: a vLLM engine in the worker on the same GPU, given the
  adapter's current weights each step (see there).

`choose_backend(vllm_importable, cuda, distributed)`: vLLM where `vllm` can be imported and the job
runs on one CUDA device (one process); the lean sampler everywhere else (the CPU, a GPU
image without vLLM, a job on several GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POLICY_TOP_K = 50


@dataclass(frozen=True)
class SampleSettings:
    temperature: float
    max_new_tokens: int
    stop_ids: tuple[int, ...]
    top_k: int = 0  # 0: no top-k
    top_p: float = 1.0  # 1: no top-p


def choose_backend(vllm_importable: bool, cuda: bool, distributed: bool) -> str:
    """ "vllm" or "transformers" (module docstring)."""
    return "vllm" if vllm_importable and cuda and not distributed else "transformers"


def vllm_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def warp(logits: Any, s: SampleSettings) -> Any:
    """float32 logits [rows, vocab] warped as `generate`'s processors do: temperature,
    top-k, top-p (the tokens they remove at -inf)."""
    import torch

    scores = logits / s.temperature
    if 0 < s.top_k < scores.shape[-1]:
        kth = torch.topk(scores, s.top_k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if s.top_p < 1.0:
        ordered, index = torch.sort(scores, descending=False)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - s.top_p)
        remove[..., -1:] = False  # keep at least one token
        scores = scores.masked_fill(remove.scatter(1, index, remove), -float("inf"))
    return scores


class LeanSampler:
    """Samples with the transformers model `model` (module docstring). `compute_dtype`:
    the autocast the scoring runs under (LoRA weights float32, the base's maybe not)."""

    def __init__(self, model: Any, pad_id: int, device: Any, compute_dtype: Any) -> None:
        self.model, self.pad_id, self.device, self.dtype = model, pad_id, device, compute_dtype

    def sample(self, prompts: list[list[int]], n: int, s: SampleSettings) -> list[list[int]]:
        import torch

        from trainer.preference_loss import dropout_off

        on = self.dtype != torch.float32
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=on)
        with torch.no_grad(), dropout_off(self.model), autocast:
            rows = self._decode(prompts, n, s)
        return [cut_at_stop(row, s.stop_ids) for row in rows.tolist()]

    def _decode(self, prompts: list[list[int]], n: int, s: SampleSettings) -> Any:
        import torch

        width = max(len(p) for p in prompts)
        pad = self.pad_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1
        )
        cache = out.cache
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)
        mask, last = mask.repeat_interleave(n, dim=0), pos[:, -1:].repeat_interleave(n, dim=0)
        stop = torch.tensor(s.stop_ids, device=self.device)
        alive = torch.ones(len(prompts) * n, dtype=torch.bool, device=self.device)
        tokens = []
        for t in range(s.max_new_tokens):
            token = self._draw(logits, s).masked_fill(~alive, pad)
            tokens.append(token)
            alive &= ~torch.isin(token, stop)
            if t + 1 == s.max_new_tokens or not alive.any():
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            last = last + 1
            out = self.model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=last,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache, logits = out.cache, out.logits[:, -1].float()
        return torch.stack(tokens, dim=1)

    @staticmethod
    def _draw(logits: Any, s: SampleSettings) -> Any:
        import torch

        if s.temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(warp(logits, s), dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)


def cut_at_stop(row: list[int], stop_ids: tuple[int, ...]) -> list[int]:
    """A completion up to and including its first stop token (the model learns to stop);
    never empty."""
    for k, token in enumerate(row):
        if token in stop_ids:
            return row[: k + 1]
    return row or [stop_ids[0]]
