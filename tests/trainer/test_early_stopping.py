"""Early stopping on eval loss: the settings' checks, the stop rule, and a real run on the
tiny model whose eval loss rises (training rows and eval rows that contradict each other),
which stops within its patience and delivers the best evaluated weights as the adapter."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.trainer.conftest import TOY_QA, make_spec, write_jsonl
from trainer.shared.spec import EarlyStoppingSpec, JobSpec, TrainingSpec
from trainer.stopping import BestEval

# ------------------------------------------------------------------- settings and the rule


def _errors(**training: Any) -> str:
    with pytest.raises(ValidationError) as e:
        TrainingSpec(**training)
    return str(e.value)


def test_early_stopping_is_off_by_default_and_needs_evaluations_during_training() -> None:
    assert TrainingSpec().early_stopping is None
    assert "set eval_every to the steps between them" in _errors(early_stopping={"patience": 2})
    t = TrainingSpec(eval_every=10, early_stopping={})
    assert (t.early_stopping.patience, t.early_stopping.min_delta) == (3, 0.0)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"patience": 0}, "patience must be at least 1 evaluation (got 0)"),
        ({"min_delta": -0.1}, "min_delta must be a loss difference from 0 to 10 (got -0.1)"),
        ({"min_delta": float("nan")}, "min_delta must be a loss difference from 0 to 10"),
    ],
)
def test_bad_early_stopping_settings_name_the_setting(given: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        EarlyStoppingSpec(**given)


def test_a_training_job_with_early_stopping_needs_an_eval_split() -> None:
    training = {"eval_every": 5, "early_stopping": {"patience": 2}}
    model, rows = Path("model"), Path("t.jsonl")
    with pytest.raises(ValidationError, match="this job has no eval split: hold out rows"):
        JobSpec.model_validate(make_spec(model, rows, training=training))
    for data in ({"eval_fraction": 0.1}, {"eval_path": "e.jsonl"}):
        spec = make_spec(model, rows, training=training, data=data)
        assert JobSpec.model_validate(spec).training.early_stopping.patience == 2


def test_the_rule_stops_after_patience_evaluations_without_improvement() -> None:
    best = BestEval()
    seen = []
    for step, loss in [(2, 3.0), (4, 2.0), (6, 2.5), (8, 1.5), (10, 1.6), (12, 1.7)]:
        kept = best.observe(step, loss, min_delta=0.0)
        seen.append((kept, best.exhausted(2)))
    assert seen == [
        (True, False),
        (True, False),
        (False, False),
        (True, False),  # a new best resets the count
        (False, False),
        (False, True),  # the second evaluation in a row without improvement stops
    ]
    assert (best.step, best.loss) == (8, 1.5)


def test_a_fall_smaller_than_min_delta_keeps_the_weights_but_does_not_reset_patience() -> None:
    best = BestEval()
    best.observe(1, 2.0, min_delta=0.1)
    assert best.observe(2, 1.95, min_delta=0.1)  # lower: the best weights, yet no improvement
    assert (best.step, best.stale) == (2, 1) and best.exhausted(1)
    assert best.observe(3, 1.8, min_delta=0.1) and best.stale == 0  # 0.15 below: improves


# ------------------------------------------------------------------- a real run


def _contradicting(tmp: Path) -> tuple[Path, Path]:
    """Training rows map each question to its answer; the eval rows to the next one's. The
    eval loss first falls (the answer format is shared) and then rises as the training
    answers are learnt."""
    answers = [a for _, a in TOY_QA]

    def rows(shift: int) -> list[dict[str, Any]]:
        return [
            {
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": answers[(i + shift) % len(answers)]},
                ]
            }
            for i, (q, _) in enumerate(TOY_QA)
        ]

    return write_jsonl(tmp / "train.jsonl", rows(0) * 4), write_jsonl(tmp / "eval.jsonl", rows(1))


def _lora_weights(model: Any) -> dict[str, Any]:
    """Trainable weights by the names PEFT saves them under."""
    return {
        n.replace(".default", ""): p.detach().clone()
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def _rising(model: Path, train: Path, eval_: Path, out: Path, **training: Any) -> dict[str, Any]:
    """A job on the contradicting rows with a high learning rate, evaluated every 2 steps,
    stopping after 2 evaluations without improvement."""
    return make_spec(
        model,
        training={
            "max_steps": 40,
            "learning_rate": 3e-2,
            "grad_accum": 1,
            "eval_every": 2,
            "early_stopping": {"patience": 2},
            **training,
        },
        data={"train_path": str(train), "eval_path": str(eval_)},
        output={"adapter_name": "toy", "local_dir": str(out)},
    )


@pytest.mark.slow
def test_a_run_whose_eval_loss_rises_stops_within_patience_and_keeps_the_best_weights(
    tiny_model: Path, worker_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file

    from trainer import loop, setup
    from trainer import train as lifecycle

    train, eval_ = _contradicting(tmp_path)
    patience, every = 2, 2
    spec = JobSpec.model_validate(_rising(tiny_model, train, eval_, tmp_path / "out"))
    weights_after: dict[int, dict[str, Any]] = {}  # the LoRA weights after each step
    real_step = loop.optimizer_step

    def recording_step(run: Any, batches: Any, step: int, *args: Any) -> Any:
        result = real_step(run, batches, step, *args)
        weights_after[step + 1] = _lora_weights(run.model)
        return result

    monkeypatch.setattr(loop, "optimizer_step", recording_step)
    events = list(lifecycle.run_training(spec, worker_env, time.monotonic()))

    done = events[-1]
    assert done.type == "completed" and done.data["reason"] == "early_stopping", done.data
    evals = {e.data["step"]: e.data["eval_loss"] for e in events if "eval_loss" in e.data}
    summary = done.data["summary"]
    best_step, best_loss, stop = summary["best_step"], summary["best_eval_loss"], summary["steps"]
    # The eval loss fell, then rose: the best lies before the end and before the plan's end.
    assert best_loss == min(evals.values()) == evals[best_step]
    assert evals[stop] > best_loss and stop < 40
    # Stopped exactly `patience` evaluations after the best, none of them an improvement.
    assert stop == best_step + patience * every
    assert max(evals) == stop and all(evals[s] >= best_loss for s in evals if s > best_step)
    assert summary["eval_loss"] == best_loss  # the adapter's own eval loss

    # The adapter delivered holds the best step's weights, not the last step's.
    saved = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert set(saved) == set(weights_after[stop])
    for name, tensor in saved.items():
        assert torch.equal(tensor, weights_after[best_step][name].to(tensor.dtype)), name
    assert any(not torch.equal(saved[n], weights_after[stop][n]) for n in saved)
    assert json.loads((tmp_path / "out" / "brightrun.json").read_text())["summary"] == summary

    # Scored again from the saved files, the adapter's eval loss is the best one recorded.
    again = JobSpec.model_validate(
        make_spec(
            tiny_model,
            job_id="job-check",
            resume_from=str(tmp_path / "out"),
            data={"train_path": str(train), "eval_path": str(eval_)},
        )
    )
    (tmp_path / "check").mkdir()
    run = setup.setup(again, worker_env, tmp_path / "check")
    try:
        assert loop.evaluate(run) == pytest.approx(best_loss, rel=1e-5)
        assert loop.evaluate(run) != pytest.approx(evals[stop], rel=1e-3)
    finally:
        run.release()


@pytest.mark.slow
def test_a_resumed_job_keeps_the_best_weights_and_the_count_of_its_earlier_attempt(
    tiny_model: Path, worker_env: Any, tmp_path: Path
) -> None:
    """Stopped right after a checkpoint taken one evaluation past the best, the job started
    again stops at the next evaluation, with the earlier attempt's best weights."""
    from safetensors.torch import load_file

    from tests.trainer.conftest import run
    from trainer.actions import run_job

    train, eval_ = _contradicting(tmp_path)
    straight = run({**_rising(tiny_model, train, eval_, tmp_path / "a"), "job_id": "a"}, worker_env)
    summary = straight[-1]["data"]["summary"]
    best, stop = summary["best_step"], summary["steps"]
    assert stop == best + 4 < 40

    spec = {
        **_rising(tiny_model, train, eval_, tmp_path / "b", checkpoint_every=best + 3),
        "job_id": "b",
    }
    first, seen = run_job(spec, worker_env), []
    for event in first:
        seen.append(event)
        if event.type == "checkpoint":
            break
    first.close()  # the worker goes away right after its checkpoint, before the stop
    assert seen[-1].data["step"] == best + 3
    again = run({**spec, "first_seq": len(seen)}, worker_env)
    assert again[0]["data"]["resumed_from_step"] == best + 3
    done = again[-1]["data"]
    assert done["reason"] == "early_stopping" and done["summary"]["steps"] == stop
    assert (done["summary"]["best_step"], done["summary"]["best_eval_loss"]) == (
        best,
        pytest.approx(summary["best_eval_loss"], rel=1e-6),
    )
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch_close(a[name], b[name]), name


def torch_close(x: Any, y: Any) -> bool:
    import torch

    return bool(torch.allclose(x, y, rtol=1e-5, atol=1e-7))
