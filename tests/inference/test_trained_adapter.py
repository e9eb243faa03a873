"""End to end: the trainer's job handler trains a LoRA adapter on a toy question→answer
task and copies it into the volume's adapter folder; the inference server resolves it by
name, and through the server the adapter answers the trained questions correctly more
often than the base model, and exactly as PEFT does, whether loaded at run time or by the
filesystem resolver. Each test runs against real vLLM (`[vllm]`) and the local server
(`[local]`); the adapter is trained once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.clients.inference import InferenceClient, LoadMode, PromptCase, Sampling, compare_on_set
from tests.adapters.conftest import LEARN_QA
from tests.inference.conftest import Server, settings_for

pytestmark = pytest.mark.slow

GREEDY = Sampling(temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def server(both_servers: Server) -> Server:
    return both_servers


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
        "training": {**LEARN_QA, "log_every": 20},
        "output": {"adapter_name": adapter_name},
    }


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The adapter the trainer's job handler makes, as the worker copies it to the volume
    (ADAPTER_DIR/<adapter name>)."""
    from trainer.env import WorkerEnv
    from trainer.handler import events as handler

    work = tmp_path_factory.mktemp("trained")
    data = work / "toy.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            )
            + "\n"
            for q, a in QA
        )
    )
    env = WorkerEnv(
        model_cache_dir=work / "models", checkpoint_dir=work / "ck", adapter_dir=work / "volume"
    )
    events = list(handler({"id": "rp-toy", "input": toy_job(tiny_model, data, "toy")}, env))
    assert events[-1]["type"] == "completed", events[-1]
    assert (work / "volume" / "toy" / "adapter_config.json").is_file()
    return work / "volume" / "toy"


@pytest.fixture(scope="module")
def peft_answers(tiny_model: Path, trained: Path) -> dict[str, str]:
    """The trained adapter's greedy answers with transformers + PEFT, in this process."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), trained
    )
    model.eval()
    out = {}
    for q, _ in QA:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": q}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, max_new_tokens=GREEDY.max_tokens, do_sample=False)
        out[q] = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
    return out


def test_trained_adapter_answers_as_peft_does_loaded_either_way(
    server: Server, trained: Path, peft_answers: dict[str, str], data_dir: Path, unique_name: str
) -> None:
    runtime, resolved = f"{unique_name}-rt", f"{unique_name}-fs"
    shutil.copytree(trained, server.adapters_dir / resolved)
    with InferenceClient(settings_for(server, data_dir, inference_lora_loading="runtime")) as c:
        assert c.ensure_adapter(runtime, str(trained)).mode is LoadMode.RUNTIME
        got_runtime = {
            q: c.chat(runtime, [{"role": "user", "content": q}], GREEDY).text for q, _ in QA
        }
        c.unload_adapter(runtime)
    with InferenceClient(settings_for(server, data_dir, inference_lora_loading="resolver")) as c:
        assert c.ensure_adapter(resolved).mode is LoadMode.RESOLVER
        got_resolver = {
            q: c.chat(resolved, [{"role": "user", "content": q}], GREEDY).text for q, _ in QA
        }
    assert got_runtime == peft_answers
    assert got_resolver == peft_answers


def test_trained_adapter_beats_the_base_through_the_server(
    server: Server, trained: Path, data_dir: Path, unique_name: str
) -> None:
    # The worker's copy on the volume, which the server's filesystem resolver watches.
    shutil.copytree(trained, server.adapters_dir / unique_name)
    settings = settings_for(server, data_dir, inference_lora_loading="resolver")
    with InferenceClient(settings) as client:
        assert client.ensure_adapter(unique_name).mode is LoadMode.RESOLVER
        cases = [PromptCase(({"role": "user", "content": q},), a) for q, a in QA]
        rows = compare_on_set(client, cases, [server.base, unique_name], GREEDY)

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
