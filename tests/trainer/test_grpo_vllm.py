"""GRPO's vLLM sampling backend (`trainer.grpo_vllm.VllmSampler`) on real vLLM (its CPU
build in .venv-vllm, float32, the tiny model with heads vLLM's CPU attention takes): a
script in that environment drives the backend class as the worker does, and its greedy
completions are the tokens transformers' `generate` gives with the same adapter through
PEFT in this environment. Between two calls the adapter's folder receives other weights
(as `PolicyOnVllm` saves the adapter of each step into one folder): the second call
samples with the new weights. Without an adapter it samples the base; a completion ends at
its first stop token, kept. A missing .venv-vllm fails the test; BRIGHTRUN_SKIP_VLLM=1
skips it (`tests.inference.conftest.need_vllm`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cli.stack import VLLM_PYTHON, VLLM_TINY
from tests.conftest import ROOT
from tests.inference.conftest import make_adapter, need_vllm

pytestmark = pytest.mark.slow

PROMPTS = ["Write the letter a.", "What is the secret word for a river far away?"]
NEW_TOKENS = 12

SCRIPT = """
import json, shutil, sys
from trainer.grpo_sampling import SampleSettings
from trainer.grpo_vllm import VllmSampler

job = json.loads(open(sys.argv[1]).read())
engine = VllmSampler(
    job["model"], max_lora_rank=4, dtype="float32", max_model_len=256, seed=0,
    enforce_eager=True, kv_cache_memory_bytes=64 * 2**20,
)
out = []
for call in job["calls"]:
    if call.get("copy_from"):
        shutil.copytree(call["copy_from"], job["folder"], dirs_exist_ok=True)
    s = SampleSettings(0.0, job["new_tokens"], tuple(call["stop"]))
    out.append(engine.sample(job["prompts"], 2, s, job["folder"] if call["adapter"] else None))
open(sys.argv[2], "w").write(json.dumps(out))
"""


def _generate(model_dir: Path, adapter: Path | None, prompts: list[list[int]], stop: int) -> Any:
    """transformers + PEFT greedy completions, each cut after its stop token."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.grpo_sampling import cut_at_stop

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    out = []
    with torch.no_grad():
        for p in prompts:
            row = model.generate(
                input_ids=torch.tensor([p]),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                eos_token_id=stop,
                pad_token_id=stop,
            )[0, len(p) :].tolist()
            out.append(cut_at_stop(row, (stop,)))
    return out


def test_vllm_backend_samples_the_adapters_current_weights(tmp_path: Path) -> None:
    need_vllm()
    from transformers import AutoTokenizer

    from trainer.shared.tiny import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path / "model", **VLLM_TINY)
    first = make_adapter(model, tmp_path / "first", rank=4, seed=1)
    second = make_adapter(model, tmp_path / "second", rank=4, seed=2)
    tok = AutoTokenizer.from_pretrained(model)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = tok.eos_token_id
    want = {
        "first": _generate(model, first, prompts, eos),
        "second": _generate(model, second, prompts, eos),
        "base": _generate(model, None, prompts, eos),
    }
    stop = want["second"][1][2]
    want["stopped"] = _generate(model, second, prompts, stop)
    assert want["first"] != want["second"] != want["base"]  # the adapters change answers

    folder = tmp_path / "policy"
    shutil.copytree(first, folder)
    job = {
        "model": str(model),
        "folder": str(folder),
        "prompts": prompts,
        "new_tokens": NEW_TOKENS,
        "calls": [
            {"adapter": True, "stop": [eos]},
            {"adapter": True, "stop": [eos], "copy_from": str(second)},
            {"adapter": False, "stop": [eos]},
            {"adapter": True, "stop": [stop]},
        ],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "sample.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    env.pop("OMP_NUM_THREADS", None)  # vLLM binds its own threads
    done = subprocess.run(
        [
            str(VLLM_PYTHON),
            str(tmp_path / "sample.py"),
            str(tmp_path / "job.json"),
            str(tmp_path / "out.json"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    got = json.loads((tmp_path / "out.json").read_text())
    for name, completions in zip(("first", "second", "base", "stopped"), got, strict=True):
        # two completions per prompt, greedy: both are transformers' one
        assert completions == [c for c in want[name] for _ in range(2)], name
    assert got[3][2][-1] == stop and got[3][2] != got[1][2]  # cut at the stop token
