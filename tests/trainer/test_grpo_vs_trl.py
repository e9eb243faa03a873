"""BrightRun's GRPO loss equals TRL 1.16's `GRPOTrainer` loss on the same tiny model,
prompts, completions and rewards (float32), for each loss normalisation (grpo, bnpo,
dr_grpo, dapo), with and without the KL term, and with sampling log-probabilities that
differ from the current ones (so clipping takes part).

TRL scores a padded batch (`_compute_loss` on its own inputs); BrightRun scores the same
token ids packed into one padding-free row (`trainer.loss.token_logps`), either each
prompt and completion apart or each prompt laid out once for its group of completions
(`trainer.grpo.group_rows`, what a job on this model does), computes the
group-normalised advantages of the same rewards (`trainer.grpo_loss.advantages`, checked
against TRL's formula) and its loss (`trainer.grpo_loss.policy_loss`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.conftest import make_spec
from tests.trainer.test_preference_vs_trl import _lora_grads, _perturb_b

GROUP = 4
REWARDS = [1.0, 0.0, 0.5, 0.0, 0.2, 0.9, 0.9, 0.1]
RTOL = 1e-4  # the loss sums terms of both signs (advantages), so cancellation costs a digit


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    from trainer.model import load_for_training, load_tokenizer
    from trainer.shared.spec import JobSpec

    spec = JobSpec.model_validate(
        make_spec(tiny_model, tiny_model / "config.json", lora={"dropout": 0.0})
    )
    torch.manual_seed(0)
    lm = load_for_training(spec, tiny_model, load_tokenizer(tiny_model))
    _perturb_b(lm.model, 0)
    return lm


def _batch(loaded: Any) -> dict[str, Any]:
    """Two prompts of the same length, four completions each (lengths 3 to 7)."""
    gen = torch.Generator().manual_seed(1)
    vocab = loaded.model.get_input_embeddings().weight.shape[0]
    prompts = torch.randint(5, vocab, (2, 6), generator=gen)
    lengths = [3, 5, 7, 4, 6, 7, 3, 5]
    width = max(lengths)
    completions = torch.randint(5, vocab, (len(lengths), width), generator=gen)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    return {
        "prompt_ids": prompts.repeat_interleave(GROUP, dim=0),
        "prompt_mask": torch.ones(len(lengths), 6, dtype=torch.long),
        "completion_ids": completions * mask,
        "completion_mask": mask,
    }


@pytest.fixture
def trl(loaded: Any, tmp_path: Path):
    """A GRPOTrainer builder on the shared model; the reference copy it adds is dropped."""
    yield lambda **kw: _trl(loaded, tmp_path / "trl", **kw)
    if "ref" in loaded.model.peft_config:
        loaded.model.delete_adapter("ref")
    loaded.model.set_adapter("default")


def _trl(loaded: Any, out: Path, **kw: Any) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=len(REWARDS),
        num_generations=GROUP,
        max_completion_length=8,
        report_to="none",
        use_cpu=True,
        gradient_checkpointing=False,
        bf16=False,  # float32 throughout
        **kw,
    )
    return GRPOTrainer(
        model=loaded.model,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "x"}] * 8),
        processing_class=loaded.tokenizer,
    )


def _our_logps(loaded: Any, b: dict[str, Any], shared: bool = False) -> Any:
    """Per-token log-probs [completions, width] from BrightRun's packed scoring: each
    prompt and completion apart, or (`shared`) each prompt once for its group."""
    from trainer import data as D
    from trainer.grpo import group_rows
    from trainer.loss import token_logps

    answers = [
        b["completion_ids"][k][b["completion_mask"][k].bool()].tolist()
        for k in range(b["completion_ids"].size(0))
    ]
    if shared:
        prompts = [b["prompt_ids"][k].tolist() for k in range(0, len(answers), GROUP)]
        batch = group_rows(prompts, answers, "cpu")
        pick = (batch.pick, batch.pick_targets)
        assert batch.n_tokens < sum(len(a) + len(prompts[0]) for a in answers)
    else:
        samples = []
        for k, answer in enumerate(answers):
            prompt = b["prompt_ids"][k].tolist()
            ids = prompt + answer
            targets = [
                ids[t + 1] if t + 1 >= len(prompt) else D.IGNORE for t in range(len(ids) - 1)
            ]
            samples.append(D.Sample(ids, targets + [D.IGNORE], len(answer), k + 1))
        every = list(range(len(samples)))
        batch, pick = D.collate(samples, every, packed=True, pad_id=0, device="cpu"), None
    flat, _ = token_logps(loaded.model, batch, loaded.device, loaded.compute_dtype, pick)
    out = torch.zeros(b["completion_mask"].shape, dtype=torch.float32)
    return out.masked_scatter(b["completion_mask"].bool(), flat)


def test_advantages_equal_trls_formula() -> None:
    from trainer.grpo_loss import advantages

    r = torch.tensor(REWARDS)
    g = r.view(-1, GROUP)
    want = (r - g.mean(1).repeat_interleave(GROUP)) / (g.std(1).repeat_interleave(GROUP) + 1e-4)
    torch.testing.assert_close(advantages(r, GROUP), want)
    same = advantages(torch.tensor([1.0] * 4 + [float("nan"), 1.0, 0.0, 1.0]), GROUP)
    assert same[:4].abs().max() == 0 and same[4] == 0  # equal rewards, an unscored one


@pytest.mark.parametrize("shared", [False, True], ids=["apart", "shared_prompts"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_and_gradients_equal_trl(
    loaded, trl, loss_type: str, beta: float, shared: bool
) -> None:
    from trainer.grpo_loss import GrpoSettings, advantages, policy_loss

    trainer = trl(loss_type=loss_type, beta=beta, epsilon=0.1)
    model = loaded.model
    model.train()
    b = _batch(loaded)
    mask = b["completion_mask"]
    with torch.no_grad():
        current = _our_logps(loaded, b)
        old = current + 0.3 * torch.randn(current.shape, generator=torch.Generator().manual_seed(2))
        with model.disable_adapter():
            ref = _our_logps(loaded, b)
    adv = advantages(torch.tensor(REWARDS), GROUP)
    inputs = dict(b, advantages=adv, old_per_token_logps=old * mask, num_items_in_batch=mask.sum())
    if beta:
        inputs["ref_per_token_logps"] = ref * mask
    model.zero_grad()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop in TRL
    theirs = trainer._compute_loss(model, inputs)
    theirs.backward()
    theirs_grads = _lora_grads(model)
    model.zero_grad()
    s = GrpoSettings(loss_type=loss_type, epsilon=0.1, beta=beta, max_completion_length=8)
    ours, metrics = policy_loss(_our_logps(loaded, b, shared), old, ref, adv, mask, s)
    ours.backward()
    ours_grads = _lora_grads(model)

    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=RTOL)
    assert set(ours_grads) == set(theirs_grads) and ours_grads
    for name, g in theirs_grads.items():
        torch.testing.assert_close(ours_grads[name], g, rtol=1e-4, atol=1e-6)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["clip_ratio"] == pytest.approx(logged["clip_ratio/region_mean"], abs=1e-6)
    assert metrics["clip_ratio"] > 0  # clipping takes part
    if beta:
        assert metrics["kl"] == pytest.approx(logged["kl"], rel=1e-4) and metrics["kl"] > 0
