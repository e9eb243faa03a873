"""GRPO through the real job path (`trainer.actions.run_job`) on a toy task with a verifiable
answer: every prompt asks for the letter `a` written many times; a completion scores by
how close it is to the item's answer (`text_similarity`, fuzzy_match) and by the share of
its characters that are `a` (a python grader, run in the sandbox). The tiny random model
starts near 0; GRPO must raise the mean reward. The job reports reward per grader,
completion length and clip ratio live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import make_spec, write_jsonl

pytestmark = pytest.mark.slow

SHARE_OF_A = """
def grade(sample, item):
    text = sample["output_text"]
    return text.count("a") / max(len(text), 1)
"""
GRADERS = [
    {
        "type": "text_similarity",
        "name": "close",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "fuzzy_match",
    },
    {"type": "python", "name": "share_a", "source": SHARE_OF_A},
]


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": f"Write the letter a, {i}."}], "answer": "a" * 8}
        for i in range(n)
    ]


def test_grpo_raises_the_mean_reward(tiny_model: Path, tmp_path: Path, worker_env) -> None:
    from trainer.actions import run_job

    train = write_jsonl(tmp_path / "prompts.jsonl", _rows(8))
    spec = make_spec(
        tiny_model,
        train,
        method="grpo",
        grading={
            "graders": GRADERS,
            "num_generations": 8,
            "max_completion_length": 8,
            "loss_type": "dapo",
        },
        training={
            "max_steps": 24,
            "learning_rate": 2e-2,
            "micro_batch_size": 2,
            "grad_accum": 1,
            "lr_scheduler": "constant",
        },
        lora={"r": 16, "alpha": 32},
        output={"adapter_name": "grpo", "local_dir": str(tmp_path / "out")},
    )
    events = list(run_job(spec, worker_env))
    assert events[-1].type == "completed", events[-1].data
    metrics = [e.data for e in events if e.type == "metrics"]
    for m in metrics:
        assert {"reward", "reward_close", "reward_share_a", "completion_length"} <= set(m)
        assert "clip_ratio" in m and "grader_failures" not in m
    first = sum(m["reward"] for m in metrics[:4]) / 4
    last = sum(m["reward"] for m in metrics[-4:]) / 4
    print(f"GRPO mean reward: first 4 steps {first:.3f}, last 4 steps {last:.3f}")
    assert last > first + 0.2


def test_a_grader_failing_on_most_samples_stops_the_job(
    tiny_model: Path, tmp_path: Path, worker_env
) -> None:
    from trainer.actions import run_job

    broken = {"type": "python", "name": "broken", "source": "def grade(sample, item):\n  return {}"}
    spec = make_spec(
        tiny_model,
        write_jsonl(tmp_path / "prompts.jsonl", _rows(4)),
        method="grpo",
        grading={"graders": [GRADERS[0], broken], "num_generations": 4, "max_completion_length": 4},
        training={"max_steps": 4, "micro_batch_size": 2, "grad_accum": 1},
        output={"adapter_name": "grpo", "local_dir": str(tmp_path / "out")},
    )
    failed = list(run_job(spec, worker_env))[-1]
    assert failed.type == "failed" and failed.data["kind"] == "bad_input"
    assert "grader 'broken' failed on 8 of 8 samples" in failed.data["message"]
    assert "returned dict, not a finite number" in failed.data["message"]
    assert "brightrun grader test" in failed.data["suggestion"]


def test_prompts_too_long_for_a_completion_are_dropped(tiny_model: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from trainer.grpo import load_prompts
    from trainer.model import load_tokenizer
    from trainer.shared.errors import BadInput

    rows = _rows(3) + [{"messages": [{"role": "user", "content": "a " * 200}], "answer": "a"}]
    train = write_jsonl(tmp_path / "prompts.jsonl", rows)
    spec = SimpleNamespace(
        data=SimpleNamespace(
            train_url=None, train_path=str(train), eval_url=None, eval_path=None, eval_fraction=0.0
        ),
        training=SimpleNamespace(max_length=96, seed=0),
        grading=SimpleNamespace(max_completion_length=32),
    )
    tok = load_tokenizer(tiny_model)
    kept, _, facts = load_prompts(spec, tok, tmp_path)
    assert len(kept) == 3 and facts["train"]["dropped_long_prompts"] == [4]
    spec.grading.max_completion_length = 95
    with pytest.raises(BadInput, match="leaves room for a completion"):
        load_prompts(spec, tok, tmp_path)


def test_grpo_samples_in_bfloat16(tiny_model: Path, tmp_path: Path, worker_env) -> None:
    """Sampling runs under the compute dtype's autocast, as scoring does (the LoRA weights
    are float32, the base's bfloat16), on prompts of different lengths."""
    from trainer.actions import run_job

    rows = _rows(2) + [{"messages": [{"role": "user", "content": "Write a."}], "answer": "a"}]
    spec = make_spec(
        tiny_model,
        write_jsonl(tmp_path / "prompts.jsonl", rows),
        method="grpo",
        grading={"graders": GRADERS[:1], "num_generations": 2, "max_completion_length": 4},
        training={"max_steps": 2, "micro_batch_size": 3, "compute_dtype": "bfloat16"},
        output={"adapter_name": "grpo", "local_dir": str(tmp_path / "out")},
    )
    events = list(run_job(spec, worker_env))
    assert events[-1].type == "completed", events[-1].data
    started = next(e for e in events if e.type == "started").data
    assert started["model"]["compute_dtype"] == "bfloat16"
    # on the CPU: transformers' sampling, each prompt scored once for its completions
    sampling = {"backend": "transformers", "prompt_laid_out_once": True}
    assert started["model"]["grpo_sampling"] == sampling


def test_metrics_events_show_sample_completions_with_their_scores(
    tiny_model: Path, tmp_path: Path, worker_env
) -> None:
    """Each logged step carries a few of its completions with their prompt, reward and each
    grader's score; with one prompt of three completions a step, those are all of the step's
    completions, so their scores average to the step's reward metrics."""
    from trainer.actions import run_job

    rows = _rows(2)
    spec = make_spec(
        tiny_model,
        write_jsonl(tmp_path / "prompts.jsonl", rows),
        method="grpo",
        grading={"graders": GRADERS, "num_generations": 3, "max_completion_length": 4},
        training={"max_steps": 2, "micro_batch_size": 1, "grad_accum": 1},
        output={"adapter_name": "grpo", "local_dir": str(tmp_path / "out")},
    )
    events = list(run_job(spec, worker_env))
    assert events[-1].type == "completed", events[-1].data
    metrics = [e.data for e in events if e.type == "metrics"]
    assert len(metrics) == 2
    prompts = {r["messages"][-1]["content"] for r in rows}
    for m in metrics:
        samples = m["samples"]
        assert len(samples) == 3
        assert {s["prompt"] for s in samples} <= prompts
        for s in samples:
            assert isinstance(s["completion"], str)
            assert set(s["scores"]) == {"close", "share_a"}
            assert s["reward"] == pytest.approx(sum(s["scores"].values()), abs=1e-3)
        for name in ("close", "share_a"):
            mean = sum(s["scores"][name] for s in samples) / 3
            assert mean == pytest.approx(m[f"reward_{name}"], abs=1e-3)
        assert sum(s["reward"] for s in samples) / 3 == pytest.approx(m["reward"], abs=1e-3)


def test_shown_samples_cut_long_texts() -> None:
    import torch

    from trainer.grpo import PromptSample
    from trainer.grpo_shown import SAMPLE_CHARS, shown_samples

    long = "x" * (SAMPLE_CHARS * 3)
    prompt = PromptSample(
        [
            {"role": "user", "content": long},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "last"},
        ],
        {},
        0,
    )
    shown = shown_samples([prompt], [long] * 5, torch.tensor([[0.5, 0.25]] * 5), ["a", "b"], 5)
    assert len(shown) == 3
    assert shown[0]["prompt"] == "last"
    assert len(shown[0]["completion"]) == SAMPLE_CHARS and shown[0]["completion"].endswith("…")
    assert shown[0]["reward"] == 0.75 and shown[0]["scores"] == {"a": 0.5, "b": 0.25}
