"""BrightRun's DPO and ORPO losses equal TRL's on the same tiny model, pairs and LoRA weights.

One model (the tiny Qwen2 built on the spot, LoRA from `trainer.model.load_for_training`,
its B matrices set to seeded random values) serves both sides. Given a PEFT model, TRL
copies its adapter as the reference ("ref"), which is BrightRun's continued-from-a-parent
case; with that copy removed TRL disables the adapter, BrightRun's frozen-base case. Both
are checked, after a second perturbation of the trained adapter so the loss is not log 2. TRL tokenises the pairs (`DPOTrainer`'s own dataset preparation); BrightRun
scores the same token ids packed into one padding-free row with its own kernels, TRL on a
padded batch. float32 throughout: the two differ only in the order of floating-point
operations, so the losses agree to a relative 1e-5 and the LoRA gradients to 1e-4.

ORPO: trl 1.16 has `ORPOTrainer` only under `trl.experimental.orpo`, and its
cross-entropy term covers the prompt tokens as well as the chosen answer. BrightRun's
follows the ORPO paper (and BrightRun's completion-only SFT loss): the chosen answer's
tokens only. So the ORPO check compares against TRL's own `odds_ratio_loss` and
`get_batch_logps` (the odds-ratio term, bit for bit the same definition) plus the
answer-only cross-entropy computed on TRL's padded logits.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.trainer.conftest import make_spec

PAIRS = [
    ("What is the capital of France?", "Paris.", "I do not know, maybe Rome or Madrid."),
    ("Name a color.", "Blue.", "Seven."),
    ("Say yes.", "Yes, of course.", "No."),
    ("Which animal barks?", "A dog barks.", "A fish, while it swims in the cold water."),
]
RTOL, GRAD_RTOL = 1e-5, 1e-4


def _rows() -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for q, c, r in PAIRS
    ]


def _perturb_b(model: Any, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B.default" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    from trainer.model import load_for_training, load_tokenizer
    from trainer.shared.spec import JobSpec

    spec = JobSpec.model_validate(
        make_spec(tiny_model, tiny_model / "config.json", method="dpo", lora={"dropout": 0.0})
    )
    lm = load_for_training(spec, tiny_model, load_tokenizer(tiny_model))
    _perturb_b(lm.model, 0)
    return lm


@pytest.fixture(scope="module")
def trl_dpo(loaded, tmp_path_factory):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")),
        beta=0.1,
        max_length=256,
        per_device_train_batch_size=len(PAIRS),
        report_to="none",
        use_cpu=True,
        gradient_checkpointing=False,
    )
    trainer = DPOTrainer(
        model=loaded.model,
        args=args,
        train_dataset=Dataset.from_list(_rows()),
        processing_class=loaded.tokenizer,
    )
    return trainer


def _brightrun_samples(trainer: Any) -> list[Any]:
    """TRL's token ids as BrightRun pair samples (answer tokens carry the score)."""
    from trainer import data as D
    from trainer.preference import PairSample

    out = []
    for k, ex in enumerate(trainer.train_dataset):
        prompt = list(ex["prompt_ids"])
        sides = []
        for key in ("chosen_ids", "rejected_ids"):
            ids = prompt + list(ex[key])
            targets = [
                ids[t + 1] if t + 1 >= len(prompt) else D.IGNORE for t in range(len(ids) - 1)
            ]
            sides.append(D.Sample(ids, targets + [D.IGNORE], len(ex[key]), k + 1))
        out.append(PairSample(sides[0], sides[1], k + 1))
    return out


def _objective(
    loaded: Any,
    method: str,
    samples: list[Any],
    parent: bool = False,
    share: bool = False,
    **prefs: Any,
):
    from trainer.preference import collate_pairs, share_prompts
    from trainer.preference_loss import Objective, compute_reference
    from trainer.setup import BatchPlan
    from trainer.shared.spec import PreferenceSpec, TrainingSpec

    obj = Objective(method, PreferenceSpec(**prefs), loaded)
    if share:
        share_prompts(samples)
    if method == "dpo":
        t = TrainingSpec(max_length=256, micro_batch_size=len(samples))
        plan = BatchPlan(t, samples, [], True, 0, pairs=True, share=share)
        compute_reference(obj, plan, parent)
    every = list(range(len(samples)))
    batch = collate_pairs(samples, every, packed=True, pad_id=0, device="cpu", share=share)
    assert (batch.layout is not None) == share
    return obj, batch


def _lora_grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_equal_to_trl(
    loaded: Any,
    trainer: Any,
    obj: Any,
    batch: Any,
    n: int,
    untrained: tuple[float, float],
    atol: float,
) -> None:
    """TRL's loss and LoRA gradients on its first `n` collated rows equal BrightRun's on the
    same rows (`batch`), and the loss is further than `untrained[1]` from `untrained[0]`
    (its value when the adapter equals the reference: a comparison there says little);
    gradients within GRAD_RTOL and `atol`."""
    model = loaded.model
    model.train()
    rows = [trainer.train_dataset[i] for i in range(n)]
    model.zero_grad()
    theirs = trainer.compute_loss(model, trainer.data_collator(rows))
    theirs.backward()
    theirs_grads = _lora_grads(model)
    model.zero_grad()
    ours = obj.step_loss(batch, [batch])
    ours.backward()
    ours_grads = _lora_grads(model)

    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=RTOL)
    assert abs(float(ours.detach()) - untrained[0]) > untrained[1]
    assert set(ours_grads) == set(theirs_grads) and ours_grads
    for name, g in theirs_grads.items():
        torch.testing.assert_close(ours_grads[name], g, rtol=GRAD_RTOL, atol=atol)


def _compare(loaded: Any, trainer: Any, obj: Any, batch: Any) -> None:
    assert_equal_to_trl(loaded, trainer, obj, batch, len(PAIRS), (0.6931, 1e-3), atol=1e-7)
    m = obj.take_metrics()  # the metrics TRL logs agree too
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert m["rewards_chosen"] == pytest.approx(logged["rewards/chosen"], rel=1e-4, abs=1e-6)
    # The margin is a difference of the two rewards: its rounding is relative to them, not to
    # itself (a small margin of two larger rewards keeps their absolute error).
    scale = abs(logged["rewards/chosen"]) + abs(logged["rewards/rejected"])
    assert m["reward_margin"] == pytest.approx(logged["rewards/margins"], abs=1e-4 * scale + 1e-6)
    assert m["reward_accuracy"] == pytest.approx(logged["rewards/accuracies"])


def test_dpo_sigmoid_loss_and_gradients_equal_trl(loaded, trl_dpo) -> None:
    samples = _brightrun_samples(trl_dpo)
    # Reference = the adapter as it was (TRL's "ref" copy; BrightRun's parent version).
    obj, batch = _objective(loaded, "dpo", samples, parent=True, beta=0.1)
    _perturb_b(loaded.model, 1)
    _compare(loaded, trl_dpo, obj, batch)
    # Reference = the frozen base (adapter disabled) on both sides; and the same with each
    # pair's prompt laid out once (shared prompts, what a DPO job on this model does).
    loaded.model.delete_adapter("ref")
    loaded.model.set_adapter("default")
    for share in (False, True):
        obj, batch = _objective(loaded, "dpo", _brightrun_samples(trl_dpo), share=share, beta=0.1)
        _compare(loaded, trl_dpo, obj, batch)


def test_orpo_loss_equals_trls_formula(loaded, trl_dpo) -> None:
    from trl.experimental.orpo import ORPOTrainer

    lam = 0.25
    samples = _brightrun_samples(trl_dpo)
    obj, batch = _objective(loaded, "orpo", samples, orpo_lambda=lam)
    inputs = trl_dpo.data_collator([trl_dpo.train_dataset[i] for i in range(len(PAIRS))])
    with torch.no_grad():
        ours = float(obj.step_loss(batch, [batch]))
        logits = loaded.model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).logits.float()
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    avg = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    n = len(PAIRS)
    fake = SimpleNamespace(beta=lam, accelerator=SimpleNamespace(device=torch.device("cpu")))
    or_losses = ORPOTrainer.odds_ratio_loss(fake, avg[:n], avg[n:])[0]
    nll = torch.nn.functional.cross_entropy(
        logits[:n, :-1].reshape(-1, logits.shape[-1]), labels[:n, 1:].reshape(-1)
    )
    assert ours == pytest.approx(float(nll - or_losses.mean()), rel=RTOL)
