"""BrightRun's KTO loss equals TRL 1.16's `KTOTrainer` loss on the same tiny model, rows and
LoRA weights (as `test_preference_vs_trl` does for DPO).

TRL tokenises the labelled answers (its own dataset preparation); BrightRun scores the same
token ids packed into one padding-free row, its mismatched sequences (each prompt with the
answer of the row before it, the first with the last: TRL's rotation within a batch) in
another, without gradients. The reference is the adapter as it was (TRL's "ref" copy;
BrightRun's parent version) before a few steps that raise every answer's likelihood (so the
KL estimate is positive and takes part), then the frozen base (adapter disabled) on both
sides. float32 throughout: losses agree to a relative 1e-5, the LoRA gradients to a relative
1e-4 (absolute 1e-6 near zero), and the rewards and the KL estimate TRL logs agree too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.conftest import make_spec
from tests.trainer.test_preference_vs_trl import _perturb_b, assert_equal_to_trl

ROWS = [
    ("What is the capital of France?", "Paris.", True),
    ("Name a color.", "Seven.", False),
    ("Say yes.", "Yes, of course.", True),
    ("Which animal barks?", "A fish, while it swims in the cold water.", False),
    ("Count to three.", "One, two, three.", True),
]


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    from trainer.model import load_for_training, load_tokenizer
    from trainer.shared.spec import JobSpec

    spec = JobSpec.model_validate(
        make_spec(tiny_model, tiny_model / "config.json", method="kto", lora={"dropout": 0.0})
    )
    torch.manual_seed(4)  # LoRA's A matrices
    lm = load_for_training(spec, tiny_model, load_tokenizer(tiny_model))
    _perturb_b(lm.model, 0)
    return lm


def _trl(loaded: Any, out: Path, **kw: Any) -> Any:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": q}],
            "completion": [{"role": "assistant", "content": a}],
            "label": label,
        }
        for q, a, label in ROWS
    ]
    args = KTOConfig(
        output_dir=str(out),
        max_length=256,
        per_device_train_batch_size=len(ROWS),
        report_to="none",
        use_cpu=True,
        gradient_checkpointing=False,
        **kw,
    )
    return KTOTrainer(
        model=loaded.model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=loaded.tokenizer,
    )


def _samples(trainer: Any) -> list[Any]:
    """TRL's token ids as BrightRun KTO samples (answer tokens carry the score)."""
    from trainer import data as D
    from trainer.kto import KtoSample

    def sample(prompt: list[int], answer: list[int], row: int) -> Any:
        ids = prompt + answer
        targets = [ids[t + 1] if t + 1 >= len(prompt) else D.IGNORE for t in range(len(ids) - 1)]
        return D.Sample(ids, targets + [D.IGNORE], len(answer), row)

    ds = [trainer.train_dataset[i] for i in range(len(ROWS))]
    out = []
    for k, ex in enumerate(ds):
        other = ds[k - 1]["completion_ids"]  # the row before (the first: the last)
        seq = sample(list(ex["prompt_ids"]), list(ex["completion_ids"]), k + 1)
        kl = sample(list(ex["prompt_ids"]), list(other), k + 1)
        out.append(KtoSample(seq, kl, bool(ex["label"]), k + 1))
    return out


def _objective(loaded: Any, samples: list[Any], parent: bool, **prefs: Any) -> tuple[Any, Any]:
    from trainer.kto import collate_kto
    from trainer.kto_loss import Objective, compute_reference
    from trainer.setup import BatchPlan
    from trainer.shared.spec import PreferenceSpec, TrainingSpec

    obj = Objective(PreferenceSpec(**prefs), loaded)
    t = TrainingSpec(max_length=256, micro_batch_size=len(samples))
    plan = BatchPlan(t, samples, [], True, 0, collate=collate_kto)
    compute_reference(obj, plan, parent)
    batch = collate_kto(samples, list(range(len(samples))), packed=True, pad_id=0, device="cpu")
    return obj, batch


def _compare(loaded: Any, trainer: Any, obj: Any, batch: Any) -> dict[str, float]:
    assert_equal_to_trl(loaded, trainer, obj, batch, len(ROWS), (0.5, 1e-4), atol=1e-6)
    m = obj.take_metrics()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert m["kl"] == pytest.approx(logged["kl"], rel=1e-4, abs=1e-6)
    assert m["rewards_desirable"] == pytest.approx(logged["rewards/chosen"], rel=1e-4, abs=1e-6)
    assert m["rewards_undesirable"] == pytest.approx(logged["rewards/rejected"], rel=1e-4, abs=1e-6)
    return m


def _learn_answers(obj: Any, batch: Any) -> None:
    """A few steps up every answer's likelihood: the adapter then gives the mismatched
    answers more probability than the reference too, so the KL estimate is positive."""
    params = [p for p in obj.lm.model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        (-obj.scores(batch)[0].sum()).backward()
        opt.step()
    opt.zero_grad()


def test_kto_loss_and_gradients_equal_trl(loaded, tmp_path: Path) -> None:
    weights = {"beta": 0.3, "desirable_weight": 1.0, "undesirable_weight": 1.4}
    trainer = _trl(loaded, tmp_path / "trl", **weights)
    obj, batch = _objective(loaded, _samples(trainer), parent=True, **weights)
    _learn_answers(obj, batch)
    assert _compare(loaded, trainer, obj, batch)["kl"] > 0  # the KL estimate takes part
    # Reference = the frozen base (adapter disabled) on both sides.
    loaded.model.delete_adapter("ref")
    loaded.model.set_adapter("default")
    obj, batch = _objective(loaded, _samples(trainer), parent=False, **weights)
    _compare(loaded, trainer, obj, batch)
