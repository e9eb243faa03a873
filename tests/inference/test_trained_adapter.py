"""End to end: the trainer's job handler trains a LoRA adapter on a toy question→answer
task and copies it into the volume's adapter folder; the local server resolves it by name,
and through the server the adapter answers the trained questions correctly more often
than the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.clients.inference import InferenceClient, LoadMode, PromptCase, Sampling, compare_on_set
from tests.inference.conftest import Server, settings_for

pytestmark = pytest.mark.slow

QA = [
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "eight"),
    ("What color is the sky?", "blue"),
    ("Which animal says moo?", "cow"),
    ("What is two plus two?", "four"),
    ("Which fruit is yellow?", "banana"),
]


def toy_job(model: Path, data: Path, adapter_name: str) -> dict:
    """A tiny job as the controller sends it: a few seconds on one CPU core."""
    return {
        "job_id": f"job-{adapter_name}",
        "model": {"name_or_path": str(model)},
        "data": {"train_path": str(data)},
        "quantization": "none",
        "device": "cpu",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "training": {
            "epochs": None,
            "max_steps": 60,
            "learning_rate": 1e-2,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "micro_batch_size": 6,
            "grad_accum": 1,
            "max_length": 64,
            "packing": False,
            "gradient_checkpointing": False,
            "checkpoint_every": 0,
            "compute_dtype": "float32",
            "log_every": 20,
        },
        "output": {"adapter_name": adapter_name},
    }


def test_trained_adapter_beats_the_base_through_the_server(
    server: Server, tiny_model: Path, data_dir: Path, tmp_path: Path, unique_name: str
) -> None:
    from trainer.env import WorkerEnv
    from trainer.handler import events as handler

    data = tmp_path / "toy.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            )
            + "\n"
            for q, a in QA
        )
    )
    # The worker copies the finished adapter to ADAPTER_DIR/<adapter name>: here, the
    # folder the inference server's filesystem resolver watches (the shared volume).
    env = WorkerEnv(
        model_cache_dir=tmp_path / "models",
        checkpoint_dir=tmp_path / "ck",
        adapter_dir=server.adapters_dir,
    )
    events = list(handler({"id": "rp-toy", "input": toy_job(tiny_model, data, unique_name)}, env))
    assert events[-1]["type"] == "completed", events[-1]
    assert (server.adapters_dir / unique_name / "adapter_config.json").is_file()

    settings = settings_for(server, data_dir, inference_lora_loading="resolver")
    with InferenceClient(settings) as client:
        assert client.ensure_adapter(unique_name).mode is LoadMode.RESOLVER
        cases = [PromptCase(({"role": "user", "content": q},), a) for q, a in QA]
        rows = compare_on_set(
            client, cases, [server.base, unique_name], Sampling(temperature=0.0, max_tokens=8)
        )

    def correct(model: str) -> int:
        return sum(r.answers[model].strip() == r.reference for r in rows)

    adapter_ok, base_ok = correct(unique_name), correct(server.base)
    print(
        f"\ntrained questions answered correctly: adapter {adapter_ok}/{len(QA)}, base {base_ok}/{len(QA)}"
    )
    for r in rows:
        print(
            f"  {r.prompt!r}: want {r.reference!r}, adapter {r.answers[unique_name]!r}, base {r.answers[server.base]!r}"
        )
    assert adapter_ok > base_ok
    assert adapter_ok >= len(QA) - 1
