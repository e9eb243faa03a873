"""Real QLoRA training on the tiny model (NF4 through bitsandbytes on the CPU)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.conftest import TOY_QA, make_spec
from trainer import train as lifecycle
from trainer.shared.spec import JobSpec

pytestmark = pytest.mark.slow


def _snapshot(model: Any, trainable: bool) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad == trainable
    }


class _Probe:
    """The real job, with the model's weights recorded before and after training."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_setup, real_cleanup = lifecycle.setup, lifecycle.cleanup

        def setup(*args: Any):
            run = real_setup(*args)
            self.lora_before = _snapshot(run.model, True)
            self.base_before = _snapshot(run.model, False)
            return run

        def cleanup(run: Any, *args: Any) -> None:
            if run is not None and run.loaded is not None:
                self.lora_after = _snapshot(run.model, True)
                self.base_after = _snapshot(run.model, False)
            real_cleanup(run, *args)

        monkeypatch.setattr(lifecycle, "setup", setup)
        monkeypatch.setattr(lifecycle, "cleanup", cleanup)

    def run(self, spec: JobSpec, env: Any):
        return lifecycle.run_training(spec, env, time.monotonic())


def _load_nf4(path: Path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=q, dtype=torch.bfloat16)


def _answers(model: Any, tok: Any) -> tuple[int, float]:
    """(greedy exact matches, mean log-likelihood per answer token) over the toy task."""
    exact, logp, n = 0, 0.0, 0
    model.eval()
    for q, a in TOY_QA:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        p_ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        a_ids = tok(a + "<|im_end|>", return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(p_ids, max_new_tokens=8, do_sample=False)
            exact += tok.decode(out[0, p_ids.shape[1] :], skip_special_tokens=True).strip() == a
            ids = torch.cat([p_ids, a_ids], dim=1)
            lp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            tgt = ids[0, 1:]
            lp = lp.gather(1, tgt[:, None]).squeeze(1)[-a_ids.shape[1] :]
        logp += float(lp.sum())
        n += a_ids.shape[1]
    return exact, logp / n


def test_qlora_learns_the_toy_task_and_only_lora_weights_change(
    tiny_model: Path,
    toy_data: Path,
    worker_env: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from peft import PeftModel
    from transformers import AutoTokenizer

    spec = JobSpec.model_validate(
        make_spec(
            tiny_model,
            quantization="nf4",
            training={
                "max_steps": 40,
                "learning_rate": 1e-2,
                "grad_accum": 1,
                "compute_dtype": "auto",
                "eval_every": 20,
            },
            data={"train_path": str(toy_data), "eval_fraction": 0.1},
            output={"adapter_name": "toy", "local_dir": str(tmp_path / "out")},
        )
    )
    job = _Probe(monkeypatch)
    events = list(job.run(spec, worker_env))

    assert [e.type for e in events][0] == "started" and events[-1].type == "completed", events[-1]
    started = events[0].data
    assert started["model"]["quantization"] == "nf4"
    assert started["model"]["packing"] == "position_ids"
    assert 0 < started["model"]["trainable_parameters"] < started["model"]["base_parameters"]
    metrics = [e.data for e in events if e.type == "metrics"]
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.3 * losses[0], losses
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert sum("eval_loss" in m for m in metrics) == 2

    # The base model is 4-bit and untouched; every LoRA matrix moved.
    assert any(t.dtype == torch.uint8 for t in job.base_before.values())
    for name, before in job.base_before.items():
        assert torch.equal(before, job.base_after[name]), name
    assert job.lora_before.keys() == job.lora_after.keys() and job.lora_before
    for name, before in job.lora_before.items():
        assert not torch.equal(before, job.lora_after[name]), name

    # The adapter as delivered: PEFT format naming the base as the spec gave it.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "brightrun.json",
    ]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model)
    record = json.loads((out / "brightrun.json").read_text())
    assert record["summary"]["steps"] == 40 and len(record["metrics"]) == 40
    adapter_dir = worker_env.adapter_dir / "toy"
    assert (adapter_dir / "adapter_model.safetensors").read_bytes() == (
        out / "adapter_model.safetensors"
    ).read_bytes()
    completed = events[-1].data
    assert completed["adapter"]["size_bytes"] == sum(p.stat().st_size for p in out.iterdir())
    assert completed["summary"]["final_loss"] == losses[-1]

    tok = AutoTokenizer.from_pretrained(tiny_model)
    base_exact, base_lp = _answers(_load_nf4(tiny_model), tok)
    tuned = PeftModel.from_pretrained(_load_nf4(tiny_model), out)
    tuned_exact, tuned_lp = _answers(tuned, tok)
    print(
        f"toy task, {len(TOY_QA)} questions: base {base_exact} exact "
        f"(log-lik/token {base_lp:.2f}), adapter {tuned_exact} exact ({tuned_lp:.2f})"
    )
    assert tuned_exact >= len(TOY_QA) - 1 and tuned_exact > base_exact
    assert tuned_lp > base_lp + 2.0


def test_plain_text_rows_train_on_every_token(
    tiny_model: Path, worker_env: Any, tmp_path: Path
) -> None:
    """Continued pretraining: `{"text"}` rows, packed, every token a target; loss goes down."""
    from tests.trainer.conftest import run, write_jsonl

    docs = [{"text": f"The secret word for {q.split()[-1].rstrip('?')} is {a}"} for q, a in TOY_QA]
    data = write_jsonl(tmp_path / "docs.jsonl", docs * 4)
    spec = make_spec(
        tiny_model, data, training={"max_steps": 12, "learning_rate": 1e-2, "grad_accum": 1}
    )
    events = run(spec, worker_env)
    assert events[0]["type"] == "started" and events[-1]["type"] == "completed", events[-1]
    train = events[0]["data"]["dataset"]["train"]
    assert train["rows"] == len(docs) * 4 and train["dropped_rows"] == 0
    assert train["loss_tokens"] == train["tokens"] - train["samples"]  # all but each first token
    assert events[0]["data"]["model"]["packing"] == "position_ids"
    losses = [e["data"]["loss"] for e in events if e["type"] == "metrics"]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses


def test_long_documents_are_trained_on_in_windows(
    tiny_model: Path, worker_env: Any, tmp_path: Path
) -> None:
    """Documents several times `max_length` long are split, not cut: the started event
    reports the windows, every window trains, and loss goes down."""
    from tests.trainer.conftest import run, write_jsonl

    story = " ".join(f"The secret word for {q.split()[-1].rstrip('?')} is {a}" for q, a in TOY_QA)
    docs = [{"text": story}, {"text": " ".join(reversed(story.split()))}]
    data = write_jsonl(tmp_path / "long.jsonl", docs * 2)
    spec = make_spec(
        tiny_model,
        data,
        training={
            "max_steps": 24,
            "learning_rate": 1e-2,
            "grad_accum": 1,
            "max_length": 32,
        },
    )
    events = run(spec, worker_env)
    assert events[0]["type"] == "started" and events[-1]["type"] == "completed", events[-1]
    train = events[0]["data"]["dataset"]["train"]
    assert train["split_rows"] == 4 and train["truncated_rows"] == 0 and train["dropped_rows"] == 0
    assert train["windows_from_split_rows"] == train["samples"] >= 4 * 3
    assert train["loss_tokens"] == train["tokens"] - train["samples"]  # all but each window's first
    losses = [e["data"]["loss"] for e in events if e["type"] == "metrics"]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
