"""Packing changes nothing about a sample's loss; the fused loss matches the reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import make_spec
from trainer import data as D

ROWS = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Colors?"},
        {"role": "assistant", "content": "Red, green and blue."},
        {"role": "user", "content": "Animals?"},
        {"role": "assistant", "content": "A cat, a dog and a horse."},
    ],
    [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}],
]
# float32 throughout; the packed and the alone computations differ only in the order of
# floating-point operations, so a relative tolerance of 1e-5 on a sample's summed loss.
RTOL = 1e-5


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    from trainer.model import load_for_training, load_tokenizer
    from trainer.shared.spec import JobSpec

    spec = JobSpec.model_validate(make_spec(tiny_model, tiny_model / "config.json"))
    return load_for_training(spec, tiny_model, load_tokenizer(tiny_model))


def _only(sample: D.Sample, keep: bool) -> D.Sample:
    if keep:
        return sample
    return dataclasses.replace(sample, targets=[D.IGNORE] * len(sample), n_loss=0)


def test_each_samples_loss_is_the_same_packed_and_alone(loaded) -> None:
    from trainer.loss import batch_loss_sum

    assert loaded.facts["attention"] == "brightrun_varlen"
    samples, _ = D.tokenize_rows(loaded.tokenizer, ROWS, max_length=256)

    def loss(ss: list[D.Sample], **kw) -> float:
        b = D.collate(ss, list(range(len(ss))), packed=True, pad_id=0, device="cpu")
        if kw:
            b = dataclasses.replace(b, **kw)
        with torch.no_grad():
            return float(batch_loss_sum(loaded.model, b, loaded.device, torch.float32))

    for i, s in enumerate(samples):
        alone = loss([s])
        packed = loss([_only(x, j == i) for j, x in enumerate(samples)])
        print(f"sample {i}: alone {alone:.6f} packed {packed:.6f}")
        assert packed == pytest.approx(alone, rel=RTOL)

    # The check can fail: the same row without restarted positions/boundaries lets the
    # later samples attend to the earlier ones, and their loss changes.
    last = len(samples) - 1
    masked = [_only(x, j == last) for j, x in enumerate(samples)]
    n = sum(len(x) for x in samples)
    leaky = loss(masked, position_ids=torch.arange(n)[None], cu_seqlens=None)
    assert leaky != pytest.approx(loss([samples[last]]), rel=1e-3)


def test_padded_batches_give_the_same_loss(loaded) -> None:
    from trainer.loss import batch_loss_sum

    samples, _ = D.tokenize_rows(loaded.tokenizer, ROWS, max_length=256)
    idx = list(range(len(samples)))
    with torch.no_grad():
        packed = batch_loss_sum(
            loaded.model,
            D.collate(samples, idx, packed=True, pad_id=0, device="cpu"),
            loaded.device,
            torch.float32,
        )
        padded = batch_loss_sum(
            loaded.model,
            D.collate(samples, idx, packed=False, pad_id=0, device="cpu"),
            loaded.device,
            torch.float32,
        )
    assert float(padded) == pytest.approx(float(packed), rel=RTOL)


def test_fused_loss_and_gradient_match_full_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import kernels

    monkeypatch.setattr(kernels, "_chunk_rows", lambda vocab: 7)  # several chunks
    g = torch.Generator().manual_seed(0)
    h = torch.randn(23, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, generator=g, dtype=torch.float64)
    t = torch.randint(0, 50, (23,), generator=g)
    fused = kernels.linear_cross_entropy(h, w, t, torch.float64)
    (g_fused,) = torch.autograd.grad(fused * 0.5, h)
    ref = torch.nn.functional.cross_entropy(h @ w.t(), t, reduction="sum")
    (g_ref,) = torch.autograd.grad(ref * 0.5, h)
    assert float(fused.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-10, atol=1e-12)


def test_generation_with_left_padded_prompts_of_different_lengths(tiny_model: Path) -> None:
    """Sampling a batch of prompts of different lengths (left-padded; GRPO's rollout) with the
    varlen attention decodes as plain SDPA does: the KV-cache steps get the keys' padding."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.kernels import register_attention

    ids = torch.tensor([[0, 0, 0, 11, 12, 13], [21, 22, 23, 24, 25, 26]])
    mask = (torch.arange(6) >= torch.tensor([[3], [0]])).long()
    out = {}
    for impl in (register_attention(), "sdpa"):
        model = AutoModelForCausalLM.from_pretrained(
            tiny_model, dtype=torch.float32, attn_implementation=impl
        ).eval()
        with torch.no_grad():
            out[impl] = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=6,
                pad_token_id=0,
            )
    torch.testing.assert_close(out["sdpa"], out[register_attention()])
