"""Small pure pieces: failure mapping, worker environment, LoRA/quantisation factories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.trainer.conftest import make_spec
from trainer.env import WorkerEnv
from trainer.shared.arch import capabilities
from trainer.shared.errors import Diverged, describe_failure
from trainer.shared.spec import JobSpec


def _spec(**over) -> JobSpec:
    return JobSpec.model_validate(make_spec(Path("/m"), Path("/d.jsonl"), **over))


def test_failures_are_classified_by_type() -> None:
    spec = _spec(training={"micro_batch_size": 8, "max_length": 4096})
    kind, message, suggestion = describe_failure(torch.OutOfMemoryError("CUDA out of memory"), spec)
    assert kind == "out_of_memory"
    assert "micro_batch_size 4 with grad_accum 4" in suggestion and "max_length 2048" in suggestion
    assert "quantization nf4" in suggestion  # the spec asked for none
    assert describe_failure(Diverged("loss nan"))[0] == "diverged"
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate(make_spec(Path("/m"), Path("/d"), training={"learning_rate": 5}))
    kind, message, _ = describe_failure(e.value)
    assert kind == "bad_input" and "training.learning_rate" in message
    assert describe_failure(KeyError("x"))[0] == "internal"


def test_worker_environment_defaults_follow_the_volume(tmp_path: Path) -> None:
    volume = tmp_path / "runpod-volume"
    off = WorkerEnv.from_environ({}, volume=volume)
    assert off.adapter_dir is None and "brightrun" in str(off.checkpoint_dir)
    volume.mkdir()
    on = WorkerEnv.from_environ({"HF_TOKEN": "hf_secret"}, volume=volume)
    assert on.model_cache_dir == volume / "models"
    assert on.checkpoint_dir == volume / "checkpoints"
    assert on.adapter_dir == volume / "adapters"
    assert on.hf_token == "hf_secret"
    assert "hf_secret" not in repr(on) and "hf_secret" not in str(on.public_view())
    explicit = WorkerEnv.from_environ({"CHECKPOINT_DIR": "/x", "ADAPTER_DIR": "/a"}, volume=volume)
    assert explicit.checkpoint_dir == Path("/x") and explicit.adapter_dir == Path("/a")


def test_an_unresolved_runpod_secret_reference_is_no_hf_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import huggingface_hub
    from huggingface_hub.utils import build_hf_headers

    from trainer.cache import download_snapshot

    reference = "{{ RUNPOD_SECRET_hf_token }}"
    monkeypatch.setenv("HF_TOKEN", reference)  # as RunPod hands it over when the secret is missing
    with caplog.at_level(logging.WARNING, logger="brightrun.trainer"):
        env = WorkerEnv.from_environ(volume=tmp_path / "no-volume")
    assert env.hf_token is None and env.public_view()["hf_token"] == "not set"
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "HF_TOKEN" in warning.getMessage() and "RUNPOD_SECRET" not in warning.getMessage()
    assert "{{" not in caplog.text

    # A hub download then sends no token at all, not the reference huggingface_hub would
    # otherwise read from the environment itself (the hub rejects it even for public models).
    sent: list[object] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: sent.append(kw["token"]))
    download_snapshot("org/model", None, tmp_path / "m", env.hf_token)
    assert "authorization" not in {k.lower() for k in build_hf_headers(token=sent[0])}
    assert build_hf_headers()["authorization"] == f"Bearer {reference}"  # what would have gone out

    assert WorkerEnv.from_environ({"HF_TOKEN": " hf_real \n"}).hf_token == "hf_real"


def test_lora_and_quantization_factories() -> None:
    from trainer.model import build_lora_config, build_quantization_config

    spec = _spec(lora={"r": 32, "alpha": 64, "use_rslora": True, "use_dora": True})
    cfg = build_lora_config(spec, capabilities("qwen2"))
    assert (cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.use_dora) == (32, 64, True, True)
    assert set(cfg.target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    q = build_quantization_config("nf4", torch.bfloat16)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert build_quantization_config("int8", torch.bfloat16).load_in_8bit
    assert build_quantization_config("none", torch.bfloat16) is None


def test_a_full_volume_is_its_own_failure_with_what_to_do() -> None:
    import errno

    from trainer.shared.errors import describe_failure

    kind, message, suggestion = describe_failure(
        OSError(errno.ENOSPC, "No space left on device", "/runpod-volume/checkpoints/j/x.pt")
    )
    assert kind == "volume_full" and message.startswith("the volume is full") and "x.pt" in message
    assert "free space" in suggestion and "retry" in suggestion
    assert describe_failure(OSError(errno.EACCES, "Permission denied"))[0] == "internal"
