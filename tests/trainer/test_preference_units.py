"""Preference tuning's pieces: the spec's rules, pairs cut at max length, and packing that
changes nothing about a sequence's score (no attention across chosen and rejected)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.trainer.conftest import make_spec


def _pair(q: str, c: str, r: str):
    from trainer.preference import PairRow

    return PairRow(
        [{"role": "user", "content": q}],
        [{"role": "assistant", "content": c}],
        [{"role": "assistant", "content": r}],
    )


def test_spec_rules_for_methods(tiny_model: Path) -> None:
    from trainer.shared.spec import JobSpec

    spec = JobSpec.model_validate(make_spec(tiny_model, tiny_model / "x.jsonl", method="orpo"))
    assert spec.sequences_per_row == 2 and spec.preference_settings.orpo_lambda == 0.1
    with pytest.raises(ValidationError, match="apply to method dpo, orpo or kto"):
        JobSpec.model_validate(
            make_spec(tiny_model, tiny_model / "x.jsonl", preference={"beta": 0.2})
        )
    with pytest.raises(ValidationError, match="loss_type"):
        JobSpec.model_validate(
            make_spec(
                tiny_model, tiny_model / "x.jsonl", method="dpo", preference={"loss_type": "kto"}
            )
        )


def test_pairs_that_differ_only_past_the_cut_are_dropped_and_counted(tiny_model: Path):
    from transformers import AutoTokenizer

    from trainer.preference import tokenize_pairs

    tok = AutoTokenizer.from_pretrained(tiny_model)
    same = "word " * 40
    pairs = [_pair("Q?", "Yes.", "No."), _pair("Q?", same + "apple", same + "pear")]
    samples, stats = tokenize_pairs(tok, pairs, max_length=32)
    assert [s.row for s in samples] == [1]
    assert stats.same_after_cut_pairs == 1 and stats.dropped_examples == [2]
    assert stats.truncated_pairs == 1


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    from trainer.model import load_for_training, load_tokenizer
    from trainer.shared.spec import JobSpec

    spec = JobSpec.model_validate(make_spec(tiny_model, tiny_model / "x.jsonl", method="dpo"))
    return load_for_training(spec, tiny_model, load_tokenizer(tiny_model))


@pytest.mark.parametrize("packed", [True, False])
def test_each_sequence_scores_the_same_batched_and_alone(loaded, packed: bool) -> None:
    from trainer.preference import collate_pairs, tokenize_pairs
    from trainer.preference_loss import Objective
    from trainer.shared.spec import PreferenceSpec

    pairs = [
        _pair("Name a fruit.", "An apple.", "A hammer, a saw and a drill."),
        _pair("Say yes.", "Yes.", "No."),
        _pair("Which animal barks?", "A dog.", "A fish that swims."),
    ]
    samples, _ = tokenize_pairs(loaded.tokenizer, pairs, max_length=128)
    obj = Objective("dpo", PreferenceSpec(), loaded)
    loaded.model.eval()

    def logps(idx: list[int]) -> torch.Tensor:
        batch = collate_pairs(samples, idx, packed=packed, pad_id=0, device="cpu")
        with torch.no_grad():
            return obj.seq_logps(batch)[0]

    together = logps([0, 1, 2])
    alone = torch.cat([logps([i]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert (together < 0).all()


def test_shared_prompts_score_and_train_as_the_two_sequences_apart(loaded) -> None:
    """A pair's common prefix laid out once: the same log-probabilities and LoRA gradients
    as chosen and rejected computed as separate sequences, from fewer tokens."""
    from trainer.preference import collate_pairs, share_prompts, tokenize_pairs
    from trainer.preference_loss import Objective, dropout_off
    from trainer.shared.spec import PreferenceSpec

    assert loaded.shared_prompts and loaded.facts["shared_prompts"]
    pairs = [
        _pair("Which animal barks? Answer briefly.", "A dog.", "A fish that swims."),
        _pair("Say yes.", "Yes.", "No."),
        # the answers' first words are shared too: the prefix reaches into them
        _pair("Name a fruit.", "An apple, red and sweet.", "An apple-shaped hammer."),
    ]
    samples, _ = tokenize_pairs(loaded.tokenizer, pairs, max_length=128)
    obj = Objective("dpo", PreferenceSpec(), loaded)
    model = loaded.model
    idx = [0, 1, 2]
    apart = collate_pairs(samples, idx, packed=True, pad_id=0, device="cpu")
    saved = share_prompts(samples)
    together = collate_pairs(samples, idx, packed=True, pad_id=0, device="cpu", share=True)
    assert saved > 0 and together.n_tokens == apart.n_tokens - saved
    assert together.n_loss == apart.n_loss
    prompt_only = share_prompts(samples[:2])
    assert samples[2].shared > len(loaded.tokenizer("Name a fruit.")["input_ids"]) > 0
    assert prompt_only < saved

    def run(batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        with dropout_off(model):
            logps = obj.seq_logps(batch)[0]
        (logps[:, 0] - 2 * logps[:, 1]).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logps.detach(), grads

    with torch.no_grad():  # a LoRA B that is not zero, so its A gets gradients too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    want, want_grads = run(apart)
    got, got_grads = run(together)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert set(got_grads) == set(want_grads) and got_grads
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-5)
