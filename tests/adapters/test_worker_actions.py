"""The worker's `merge` and `cache_model` actions through the RunPod handler, in process, on
a tiny model: the merged model's logits equal base + adapter (float32 merge within 1e-4,
bfloat16 merge within 3% of the largest logit), its shards land at their signed URLs with
a consistent index; the model cache downloads once, a later job starts from it, and it can
hold a pre-quantised (NF4) copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.trainer.conftest import LoopbackServer, write_jsonl
from trainer.env import WorkerEnv
from trainer.handler import events as handler
from trainer.shared.files import INDEX, upload_names
from trainer.shared.spec import JobSpec

IDS = [[1, 5, 9, 20, 33, 40, 2, 7, 11, 64, 3, 17]]


def run(spec: dict[str, Any], env: WorkerEnv) -> list[dict[str, Any]]:
    return list(handler({"id": "rp-1", "input": spec}, env))


@pytest.fixture
def env(tmp_path: Path) -> WorkerEnv:
    return WorkerEnv(
        model_cache_dir=tmp_path / "models",
        checkpoint_dir=tmp_path / "ck",
        adapter_dir=tmp_path / "adapters",
    )


def merge_spec(tiny: Path, adapter: Path, **merge: Any) -> dict[str, Any]:
    return {
        "job_id": "job-merge",
        "action": "merge",
        "model": {"name_or_path": str(tiny)},
        "quantization": "none",
        "device": "cpu",
        "merge": {"adapter_path": str(adapter), **merge},
        "output": {"adapter_name": "merged"},
    }


def test_actions_take_only_their_own_sections() -> None:
    base = {"job_id": "j", "model": {"name_or_path": "org/model"}}
    out = {"adapter_name": "x"}
    with pytest.raises(ValidationError, match="a training job needs data"):
        JobSpec(**base, output=out)
    with pytest.raises(ValidationError, match="a merge job needs a merge section"):
        JobSpec(**base, action="merge", output=out)
    with pytest.raises(ValidationError, match="say where the merged model goes"):
        JobSpec(**base, action="merge", merge={"adapter_path": "/a"}, output=out)
    with pytest.raises(ValidationError, match="exactly one of adapter_path or adapter_urls"):
        JobSpec(
            **base,
            action="merge",
            merge={"adapter_path": "/a", "adapter_urls": {"x": "y"}},
            output={**out, "local_dir": "/o"},
        )
    with pytest.raises(ValidationError, match="takes no training data"):
        JobSpec(**base, action="cache_model", data={"train_path": "/d"})
    with pytest.raises(ValidationError, match="merge settings do not apply to a train job"):
        JobSpec(**base, data={"train_path": "/d"}, output=out, merge={"adapter_path": "/a"})
    assert (
        JobSpec(**base, action="cache_model").data is None
    )  # a cache job needs neither data nor output


def _logits(model: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.tensor(IDS)).logits.float()


def test_merged_model_logits_equal_base_plus_adapter(
    tiny: Path, tiny_adapter: Path, env: WorkerEnv, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32), tiny_adapter
    ).eval()
    base_only = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    want = _logits(reference)
    assert (want - _logits(base_only)).abs().max() > 0.1, (
        "the adapter must change the logits for this test to mean anything"
    )

    # float32: the merge is exact up to float rounding. Shards of at most 0.1 MB.
    out32 = tmp_path / "merged-fp32"
    events = run(
        merge_spec(tiny, tiny_adapter, dtype="float32", max_shard_size_mb=0.1)
        | {"output": {"adapter_name": "merged", "local_dir": str(out32)}},
        env,
    )
    assert [e["type"] for e in events] == ["started", "completed"], events[-1]
    done = events[-1]["data"]
    assert (
        events[0]["data"]["cold_start_s"] > 0 and events[0]["data"]["model"]["dtype"] == "float32"
    )
    assert len(done["shards"]) > 1 and done["shards"][0] == "model-00001.safetensors"
    index = json.loads((out32 / INDEX).read_text())
    assert set(index["weight_map"].values()) == set(done["shards"])
    merged = AutoModelForCausalLM.from_pretrained(out32).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (_logits(merged) - want).abs().max() <= 1e-4

    # bfloat16 (the default): weights rounded to bf16, so within 3% of the largest logit.
    out16 = tmp_path / "merged-bf16"
    events = run(
        merge_spec(tiny, tiny_adapter)
        | {"output": {"adapter_name": "merged", "local_dir": str(out16)}},
        env,
    )
    assert events[-1]["type"] == "completed", events[-1]
    merged16 = AutoModelForCausalLM.from_pretrained(out16)
    assert merged16.dtype == torch.bfloat16
    assert (_logits(merged16.float().eval()) - want).abs().max() <= 0.03 * want.abs().max()


def test_merged_files_go_to_their_signed_urls_and_a_missing_url_fails_the_job(
    tiny: Path, tiny_adapter: Path, env: WorkerEnv
) -> None:
    server = LoopbackServer()
    try:
        # The adapter comes by signed URLs too, as the controller sends it from storage.
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            server.store.files[f"/adapter/{name}"] = (tiny_adapter / name).read_bytes()
        # As the controller signs them: every name a merge of this many float32 bytes may write.
        names = upload_names(
            total_bytes=(tiny / "model.safetensors").stat().st_size, max_shard_bytes=100_000
        )
        spec = merge_spec(tiny, tiny_adapter, dtype="float32", max_shard_size_mb=0.1)
        spec["merge"] = {k: v for k, v in spec["merge"].items() if k != "adapter_path"}
        spec["merge"]["adapter_urls"] = {
            n: server.url(f"/adapter/{n}")
            for n in ("adapter_config.json", "adapter_model.safetensors")
        }
        spec["output"]["upload_urls"] = {n: server.url(f"/out/{n}") for n in names} | {
            "result.json": server.url("/log/result.json")
        }
        events = run(spec, env)
        assert events[-1]["type"] == "completed", events[-1]
        got = {
            p.removeprefix("/out/"): body
            for p, (_, body) in server.store.puts.items()
            if p.startswith("/out/")
        }
        assert set(got) == set(events[-1]["data"]["files"]) == set(events[-1]["data"]["uploaded"])
        assert {"config.json", "tokenizer.json", INDEX, "brightrun.json"} <= set(got)
        index = json.loads(got[INDEX])
        assert set(index["weight_map"].values()) <= set(got)
        assert json.loads(server.store.puts["/log/result.json"][1])["status"] == "COMPLETED"

        # Too few shard URLs: the job fails as bad input and says what is missing.
        spec["job_id"] = "job-merge-2"
        spec["output"]["upload_urls"] = {
            n: u for n, u in spec["output"]["upload_urls"].items() if n != "model-00003.safetensors"
        }
        events = run(spec, env)
        assert events[-1]["type"] == "failed" and events[-1]["data"]["kind"] == "bad_input"
        assert "model-00003.safetensors" in events[-1]["data"]["message"]
    finally:
        server.close()


def test_an_adapter_of_another_base_is_refused(
    tiny: Path, tiny_adapter: Path, env: WorkerEnv, tmp_path: Path
) -> None:
    from trainer.shared.tiny import build_tiny_chat_model

    wider = build_tiny_chat_model(tmp_path / "wider", seed=0, hidden_size=96)
    events = run(
        merge_spec(wider, tiny_adapter)
        | {"output": {"adapter_name": "m", "local_dir": str(tmp_path / "o")}},
        env,
    )
    assert events[-1]["type"] == "failed" and events[-1]["data"]["kind"] == "bad_input"
    assert "does not fit base model" in events[-1]["data"]["message"]


def test_cache_model_downloads_once_and_a_later_job_starts_from_the_cache(
    tiny: Path, env: WorkerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.cache

    downloads: list[str] = []

    def fake_download(repo_id: str, revision: str | None, dest: Path, token: str | None) -> None:
        downloads.append(repo_id)  # the hub: the tiny model's files under a hub id
        shutil.copytree(tiny, dest)

    monkeypatch.setattr(trainer.cache, "download_snapshot", fake_download)
    spec = {
        "job_id": "job-cache-1",
        "action": "cache_model",
        "model": {"name_or_path": "tiny-org/tiny-chat"},
        "device": "cpu",
    }
    first = run(spec, env)
    assert [e["type"] for e in first] == ["started", "completed"], first[-1]
    assert first[0]["data"]["cached"] is False and first[0]["data"]["cold_start_s"] >= 0
    assert first[-1]["data"]["downloaded"] is True and first[-1]["data"]["size_bytes"] > 0
    folder = Path(first[-1]["data"]["folder"])
    assert (
        folder == env.model_cache_dir / "tiny-org--tiny-chat"
        and (folder / ".brightrun-complete").is_file()
    )
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], (
        "a temporary folder was left behind"
    )

    second = run(spec | {"job_id": "job-cache-2"}, env)
    assert second[0]["data"]["cached"] is True and second[-1]["data"]["downloaded"] is False
    assert downloads == ["tiny-org/tiny-chat"], "the second job downloaded again"

    # A training job on the hub id starts from the cache (no download), its cold start recorded.
    data = write_jsonl(
        tmp_path / "toy.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "Zebra."},
                ]
            }
        ]
        * 4,
    )
    train = {
        "job_id": "job-train",
        "model": {"name_or_path": "tiny-org/tiny-chat"},
        "data": {"train_path": str(data)},
        "quantization": "none",
        "device": "cpu",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "training": {
            "max_steps": 2,
            "micro_batch_size": 2,
            "grad_accum": 1,
            "max_length": 64,
            "checkpoint_every": 0,
            "compute_dtype": "float32",
            "gradient_checkpointing": False,
        },
        "output": {"adapter_name": "from-cache"},
    }
    events = run(train, env)
    assert events[-1]["type"] == "completed", events[-1]
    started = events[0]["data"]
    assert started["model"]["source"] == "cache" and started["cold_start_s"] > 0
    assert downloads == ["tiny-org/tiny-chat"]


def test_a_failed_download_leaves_no_half_model(
    env: WorkerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.cache

    def broken(repo_id: str, revision: str | None, dest: Path, token: str | None) -> None:
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")
        raise OSError("connection reset")

    monkeypatch.setattr(trainer.cache, "download_snapshot", broken)
    events = run(
        {"job_id": "job-c", "action": "cache_model", "model": {"name_or_path": "org/model"}}, env
    )
    assert events[-1]["type"] == "failed" and events[-1]["data"]["kind"] == "download_failed"
    assert not env.model_cache_dir.exists() or not any(env.model_cache_dir.iterdir())


def test_cache_model_can_store_a_pre_quantised_copy_once(
    tiny: Path, env: WorkerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    import trainer.cache

    monkeypatch.setattr(
        trainer.cache,
        "download_snapshot",
        lambda repo, rev, dest, token: shutil.copytree(tiny, dest),
    )
    spec = {
        "job_id": "job-q",
        "action": "cache_model",
        "model": {"name_or_path": "tiny-org/tiny-chat"},
        "quantization": "nf4",
        "cache": {"quantized_copy": True},
        "device": "cpu",
    }
    events = run(spec, env)
    assert events[-1]["type"] == "completed", events[-1]
    copy = events[-1]["data"]["quantized_copy"]
    assert copy["made_now"] is True and copy["folder"] == str(
        env.model_cache_dir / "tiny-org--tiny-chat.nf4"
    )
    assert 0 < copy["size_bytes"] < events[-1]["data"]["size_bytes"]
    model = AutoModelForCausalLM.from_pretrained(copy["folder"])
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    again = run(spec | {"job_id": "job-q2"}, env)[-1]["data"]
    assert again["downloaded"] is False and again["quantized_copy"]["made_now"] is False
    with pytest.raises(ValidationError, match="quantized_copy needs quantization nf4 or int8"):
        JobSpec.model_validate(spec | {"quantization": "none"})


def gguf_spec(tiny: Path, adapter: Path, out: Path, **gguf: Any) -> dict[str, Any]:
    return {
        "job_id": "job-gguf",
        "action": "gguf",
        "model": {"name_or_path": str(tiny)},
        "quantization": "none",
        "device": "cpu",
        "gguf": {"adapter_path": str(adapter), "file_stem": "bot-v1", **gguf},
        "output": {"adapter_name": "bot-gguf", "local_dir": str(out)},
    }


def test_gguf_action_writes_the_merged_weights_and_reports_its_stages(
    tiny: Path, tiny_adapter: Path, env: WorkerEnv, tmp_path: Path
) -> None:
    import gguf
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "gguf"
    events = run(gguf_spec(tiny, tiny_adapter, out, dtype="float32"), env)
    assert [events[0]["type"], events[-1]["type"]] == ["started", "completed"], events[-1]
    stages = [e["data"]["stage"] for e in events if e["type"] == "progress"]
    assert stages[0] == "merge" and stages[-1] == "write", stages  # a folder only: no upload
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "bot-v1-f16.gguf"]
    assert (
        events[-1]["data"]["files"]["bot-v1-f16.gguf"] == (out / "bot-v1-f16.gguf").stat().st_size
    )

    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32), tiny_adapter
    ).merge_and_unload()
    want = merged.model.layers[0].self_attn.q_proj.weight.detach().numpy().astype(np.float16)
    base_q = AutoModelForCausalLM.from_pretrained(tiny).model.layers[0].self_attn.q_proj.weight
    assert np.abs(want - base_q.detach().numpy()).max() > 1e-3  # the adapter changes q_proj
    (got,) = [
        t
        for t in gguf.GGUFReader(out / "bot-v1-f16.gguf").tensors
        if t.name == "blk.0.attn_q.weight"
    ]
    assert np.array_equal(np.asarray(got.data).reshape(want.shape), want)


def test_gguf_action_fails_as_bad_input_without_an_upload_url_for_each_file(
    tiny: Path, tiny_adapter: Path, env: WorkerEnv, tmp_path: Path
) -> None:
    spec = gguf_spec(tiny, tiny_adapter, tmp_path / "o", variant="f16")
    spec["output"] = {
        "adapter_name": "bot-gguf",
        "upload_urls": {"bot-v1-f16.gguf": "http://127.0.0.1:9/never"},  # no Modelfile URL
    }
    events = run(spec, env)
    assert events[-1]["type"] == "failed" and events[-1]["data"]["kind"] == "bad_input"
    assert "Modelfile" in events[-1]["data"]["message"]
    with pytest.raises(ValidationError, match="a gguf job needs a gguf section"):
        JobSpec(
            job_id="j", action="gguf", model={"name_or_path": "m"}, output={"adapter_name": "x"}
        )
