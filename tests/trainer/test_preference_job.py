"""DPO through the real job path (`trainer.actions.run_job`) on a toy preference task.

The task: six topic words, each with its own answer word. A pair's prompt names a topic
(in one of three phrasings); the chosen answer is the topic's word, the rejected one
another topic's word. The pairs held out for evaluation use answer combinations never
trained on ((rejected - chosen) mod 6 in {2, 4}, training uses {1, 3, 5}); both sets hold
each pair and its mirror, so a model that ignores the prompt prefers the chosen answer in
about half of them. Learning which word goes with which topic is what raises it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import make_spec, toy_rows, write_jsonl

TOPICS = [
    ("apple", "Zebra."),
    ("river", "Lantern."),
    ("cloud", "Pepper."),
    ("stone", "Violin."),
    ("green", "Rocket."),
    ("seven", "Marble."),
]
PHRASINGS = ["Which word goes with {t}?", "Give the word for {t}.", "The word for {t}, please?"]


def toy_pairs(offsets: set[int]) -> list[dict[str, Any]]:
    rows = []
    for phrasing in PHRASINGS:
        for i, (topic, answer) in enumerate(TOPICS):
            for j, (_, other) in enumerate(TOPICS):
                if (j - i) % 6 in offsets:
                    rows.append(
                        {
                            "prompt": [{"role": "user", "content": phrasing.format(t=topic)}],
                            "chosen": [{"role": "assistant", "content": answer}],
                            "rejected": [{"role": "assistant", "content": other}],
                        }
                    )
    return rows


def _run(spec: dict[str, Any], env: Any) -> list[Any]:
    from trainer.actions import run_job

    events = list(run_job(spec, env))
    assert events[-1].type == "completed", events[-1].data
    return events


def _pref_spec(model: Path, tmp_path: Path, **over: Any) -> dict[str, Any]:
    train = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs({1, 3, 5}))
    held = write_jsonl(tmp_path / "held.jsonl", toy_pairs({2, 4}))
    spec = make_spec(
        model,
        train,
        method="dpo",
        preference={"beta": 0.5},
        data={"train_path": str(train), "eval_path": str(held)},
        training={
            "max_steps": 24,
            "learning_rate": 1e-2,
            "micro_batch_size": 4,
            "grad_accum": 1,
            "max_length": 64,
            "eval_every": 12,
        },
        output={"adapter_name": "pref", "local_dir": str(tmp_path / "out")},
    )
    for key, value in over.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return spec


def test_dpo_raises_held_out_preference_accuracy(tiny_model: Path, tmp_path: Path, worker_env):
    events = _run(_pref_spec(tiny_model, tmp_path), worker_env)
    started = next(e for e in events if e.type == "started").data["dataset"]
    assert started["method"] == "dpo" and started["reference"] == "base model"
    before = started["reference_eval_preference_accuracy"]
    assert 0.3 <= before <= 0.7  # the base does not know the task: about a coin flip

    metrics = [e.data for e in events if e.type == "metrics"]
    for key in (
        "loss",
        "rewards_chosen",
        "rewards_rejected",
        "reward_margin",
        "reward_accuracy",
        "preference_accuracy",
    ):
        assert all(key in m for m in metrics), key
    evals = [m for m in metrics if "eval_preference_accuracy" in m]
    assert [m["step"] for m in evals] == [12, 24]
    after = evals[-1]["eval_preference_accuracy"]
    assert after >= 0.7 and after - before >= 0.2, (before, after)
    assert evals[-1]["eval_reward_margin"] > 0 and evals[-1]["eval_reward_accuracy"] >= 0.8
    assert metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference
    assert metrics[-1]["loss"] < 0.3

    record = json.loads((tmp_path / "out" / "brightrun.json").read_text())
    assert record["spec"]["method"] == "dpo"


def test_dpo_continued_from_an_sft_version_uses_it_as_reference(
    tiny_model: Path, tmp_path: Path, worker_env
):
    from safetensors.torch import load_file

    sft_dir = tmp_path / "sft"
    sft = make_spec(
        tiny_model,
        write_jsonl(tmp_path / "toy.jsonl", toy_rows()),
        job_id="sft-1",
        training={"max_steps": 4, "learning_rate": 1e-2},
        output={"adapter_name": "sft", "local_dir": str(sft_dir)},
    )
    _run(sft, worker_env)
    weights = load_file(sft_dir / "adapter_model.safetensors")
    assert any(float(w.abs().max()) > 0 for k, w in weights.items() if "lora_B" in k)

    spec = _pref_spec(
        tiny_model,
        tmp_path,
        job_id="dpo-1",
        resume_from=str(sft_dir),
        training={"max_steps": 1, "eval_every": 0},
    )
    events = _run(spec, worker_env)
    started = next(e for e in events if e.type == "started").data["dataset"]
    assert started["reference"] == "parent adapter"
    first = next(e for e in events if e.type == "metrics").data
    # Step 0's policy is the SFT version and so is the reference: every log-ratio is 0.
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards_chosen"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards_rejected"] == pytest.approx(0.0, abs=1e-5)
