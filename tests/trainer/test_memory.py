"""Activation checkpointing by measured memory: the plan follows the budget, and
recomputing layers changes nothing about the loss or the gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import make_spec
from trainer import data as D
from trainer import memory


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    from trainer.model import load_for_training, load_tokenizer
    from trainer.shared.spec import JobSpec

    spec = JobSpec.model_validate(
        make_spec(tiny_model, tiny_model / "config.json", lora={"dropout": 0.0})
    )
    lm = load_for_training(spec, tiny_model, load_tokenizer(tiny_model))
    lm.model.train()
    return lm


def _forward(lm):
    from trainer.loss import batch_loss_sum

    def forward(n: int):
        g = torch.Generator().manual_seed(n)
        ids = torch.randint(0, 500, (1, n), generator=g)
        batch = D.Batch(
            ids,
            torch.arange(n)[None],
            torch.roll(ids, -1, 1),
            None,
            torch.tensor([0, n], dtype=torch.int32),
            n,
            n,
            n,
            n,
        )
        return batch_loss_sum(lm.model, batch, lm.device, torch.float32)

    return forward


def test_layers_kept_follow_the_memory_budget(loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    layers = memory.checkpoint_layers(loaded.model)
    assert len(layers) == 2
    tokens = 512
    kw = {"tokens_per_micro_batch": tokens, "hidden_size": 64, "device": loaded.device}
    monkeypatch.setattr(memory, "free_memory", lambda device: 1 << 40)
    plenty = memory.plan_recompute(loaded.model, _forward(loaded), **kw)
    assert plenty["layers_recomputed"] == 0
    assert [layer.gradient_checkpointing for layer in layers] == [False, False]
    per_layer = plenty["activation_bytes_per_token_per_kept_layer"]
    floor = plenty["activation_bytes_per_token_all_recomputed"]
    assert per_layer > floor / 2 > 0

    # A budget with room for one layer's activations: the last layer keeps them.
    room_for_one = tokens * (floor + 1.5 * per_layer) / memory.BUDGET_SHARE
    monkeypatch.setattr(memory, "free_memory", lambda device: int(room_for_one))
    one = memory.plan_recompute(loaded.model, _forward(loaded), **kw)
    assert one["layers_recomputed"] == 1
    assert [layer.gradient_checkpointing for layer in layers] == [True, False]

    monkeypatch.setattr(memory, "free_memory", lambda device: 0)
    none = memory.plan_recompute(loaded.model, _forward(loaded), **kw)
    assert none["layers_recomputed"] == 2
    assert [layer.gradient_checkpointing for layer in layers] == [True, True]


def test_recomputing_layers_gives_the_same_loss_and_gradients(loaded) -> None:
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    with torch.no_grad():  # non-zero LoRA B, so the adapters take part
        for p in params:
            p.add_(0.01)
    results = []
    for recompute in (False, True):
        for layer in memory.checkpoint_layers(loaded.model):
            layer.gradient_checkpointing = recompute
        loaded.model.zero_grad(set_to_none=True)
        loss = _forward(loaded)(48)
        loss.backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in params]))
    (loss_kept, g_kept), (loss_recomputed, g_recomputed) = results
    assert loss_recomputed == loss_kept  # float32, same operations in the same order
    for a, b in zip(g_kept, g_recomputed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
