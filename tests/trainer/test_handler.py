"""The RunPod handler end to end: ordered events, failure kinds, time limit, uploads, resume."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.trainer.conftest import make_spec, run, toy_rows, write_jsonl
from trainer.handler import handler
from trainer.shared.spec import Event

pytestmark = pytest.mark.slow

ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "brightrun.json"]


def _check_stream(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(len(events)))
    for e in events:
        Event.model_validate(e)  # every dict is a valid event of the contract
    assert [e["type"] for e in events].count("started") <= 1
    assert events[-1]["type"] in ("completed", "failed")
    assert all(e["type"] not in ("completed", "failed") for e in events[:-1])


def test_completed_job_yields_ordered_events_and_uploads_everything(
    tiny_model: Path, worker_env: Any, http_server: Any
) -> None:
    http_server.store.files["/data/train.jsonl"] = "".join(
        json.dumps(r) + "\n" for r in toy_rows()
    ).encode()
    names = [*ADAPTER_FILES, "events.jsonl", "result.json"]
    spec = make_spec(
        tiny_model,
        data={"train_url": http_server.url("/data/train.jsonl")},
        training={"checkpoint_every": 2, "eval_every": 3},
        output={"upload_urls": {n: http_server.url(f"/up/{n}") for n in names}},
    )
    events = run(spec, worker_env)
    _check_stream(events)
    types = [e["type"] for e in events]
    assert types[0] == "started" and types[-1] == "completed", events[-1]
    assert types.count("metrics") == 6 and types.count("checkpoint") == 2

    started = events[0]["data"]
    # Signed URLs are capabilities: never echoed back.
    assert "secret-signature" not in json.dumps(events)
    assert started["config"]["output"]["upload_urls"]["result.json"] == "<signed url>"
    assert started["dataset"]["train"]["rows"] == len(toy_rows())
    assert started["model"]["trainable_parameters"] > 0
    assert started["cold_start_s"] >= 0

    m = [e["data"] for e in events if e["type"] == "metrics"][-1]
    for key in (
        "step",
        "epoch",
        "loss",
        "lr",
        "grad_norm",
        "tokens_seen",
        "tokens_seen_total",
        "tokens_per_s",
        "elapsed_s",
        "peak_memory_bytes",
    ):
        assert key in m
    assert m["tokens_seen"] < m["tokens_seen_total"]
    ckpt = [e["data"] for e in events if e["type"] == "checkpoint"]
    assert [c["step"] for c in ckpt] == [2, 4]

    puts = http_server.store.puts
    assert sorted(k.removeprefix("/up/") for k in puts) == sorted(names)
    assert puts["/up/adapter_model.safetensors"][0] == "application/octet-stream"
    assert puts["/up/adapter_config.json"][0] == "application/json"
    cfg = json.loads(puts["/up/adapter_config.json"][1])
    assert cfg["base_model_name_or_path"] == str(tiny_model)
    logged = [json.loads(line) for line in puts["/up/events.jsonl"][1].decode().splitlines()]
    assert logged == events
    result = json.loads(puts["/up/result.json"][1])
    assert result["status"] == "COMPLETED" and result["final"] == events[-1]
    done = events[-1]["data"]
    assert done["reason"] == "finished"
    assert sorted(done["adapter"]["uploaded"]) == ADAPTER_FILES
    # A completed job leaves no checkpoint behind.
    assert not (worker_env.checkpoint_dir / "job-1").exists()


def test_invalid_rows_fail_as_bad_input_and_the_log_is_still_uploaded(
    tiny_model: Path, worker_env: Any, http_server: Any, tmp_path: Path
) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [*toy_rows(1), {"messages": "nope"}])
    urls = {n: http_server.url(f"/up/{n}") for n in [*ADAPTER_FILES, "events.jsonl", "result.json"]}
    events = run(make_spec(tiny_model, bad, output={"upload_urls": urls}), worker_env)
    _check_stream(events)
    assert [e["type"] for e in events] == ["failed"]
    data = events[-1]["data"]
    assert data["kind"] == "bad_input"
    assert "row 7" in data["message"] and data["suggestion"]
    puts = http_server.store.puts
    assert sorted(puts) == ["/up/events.jsonl", "/up/result.json"]
    assert json.loads(puts["/up/result.json"][1])["status"] == "FAILED"
    assert json.loads(puts["/up/events.jsonl"][1].decode().splitlines()[-1])["type"] == "failed"


def test_invalid_spec_fails_as_bad_input_naming_the_setting(
    tiny_model: Path, toy_data: Path, worker_env: Any
) -> None:
    events = run(make_spec(tiny_model, toy_data, lora={"r": 0}), worker_env)
    _check_stream(events)
    assert events[-1]["data"]["kind"] == "bad_input"
    assert "lora.r" in events[-1]["data"]["message"]


def test_missing_model_fails_as_model_unavailable(
    tmp_path: Path, toy_data: Path, worker_env: Any
) -> None:
    events = run(make_spec(tmp_path / "no-such-model", toy_data), worker_env)
    _check_stream(events)
    assert events[-1]["type"] == "failed"
    assert events[-1]["data"]["kind"] == "model_unavailable"


def test_unreachable_dataset_url_fails_as_download_failed(
    tiny_model: Path, worker_env: Any, http_server: Any
) -> None:
    spec = make_spec(tiny_model, data={"train_url": http_server.url("/expired.jsonl")})
    events = run(spec, worker_env)
    assert events[-1]["data"]["kind"] == "download_failed"
    assert "HTTP 404" in events[-1]["data"]["message"]


def test_nan_loss_fails_as_diverged(tiny_model: Path, toy_data: Path, worker_env: Any) -> None:
    env = dataclasses.replace(worker_env, force_nan_at_step=3)
    events = run(make_spec(tiny_model, toy_data), env)
    _check_stream(events)
    assert [e["data"]["step"] for e in events if e["type"] == "metrics"] == [1, 2]
    failed = events[-1]["data"]
    assert failed["kind"] == "diverged" and "step 3" in failed["message"]
    assert "learning rate" in failed["suggestion"]


def test_time_limit_stops_saves_and_completes(
    tiny_model: Path, toy_data: Path, worker_env: Any, tmp_path: Path
) -> None:
    spec = make_spec(
        tiny_model,
        toy_data,
        training={"max_steps": 1000, "time_limit_s": 0.001},
        output={"local_dir": str(tmp_path / "out")},
    )
    events = run(spec, worker_env)
    _check_stream(events)
    done = events[-1]
    assert done["type"] == "completed"
    assert done["data"]["reason"] == "time_limit"
    assert 1 <= done["data"]["summary"]["steps"] < 1000
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_resume_continues_the_same_loss_curve(
    tiny_model: Path, toy_data: Path, worker_env: Any
) -> None:
    """Stop a job after its checkpoint at step 3, start it again: steps 4-6 match an
    uninterrupted run. Same float32 arithmetic in the same order, so equal to 1e-6."""
    from trainer.actions import run_job

    common = {
        "training": {"checkpoint_every": 3, "checkpoint_layers": "all"},
        "lora": {"dropout": 0.1},
    }
    straight = run(make_spec(tiny_model, toy_data, job_id="straight", **common), worker_env)
    curve = {e["data"]["step"]: e["data"]["loss"] for e in straight if e["type"] == "metrics"}

    spec = make_spec(tiny_model, toy_data, job_id="stopped", **common)
    first = run_job(spec, worker_env)
    seen = []
    for event in first:
        seen.append(event)
        if event.type == "checkpoint":
            break
    first.close()  # the worker goes away right after its checkpoint
    assert seen[-1].data["step"] == 3

    again = run({**spec, "first_seq": len(seen)}, worker_env)  # all were stored
    _check_stream_continues(seen, again)
    assert again[0]["data"]["resumed_from_step"] == 3
    resumed = {e["data"]["step"]: e["data"]["loss"] for e in again if e["type"] == "metrics"}
    assert sorted(resumed) == [4, 5, 6]
    for step, loss in resumed.items():
        assert loss == pytest.approx(curve[step], rel=1e-6), step
    assert again[-1]["data"]["summary"]["steps"] == 6


def test_events_the_controller_missed_are_sent_again_before_the_restart(
    tiny_model: Path, toy_data: Path, worker_env: Any
) -> None:
    """The worker is stopped right after it emitted a checkpoint event that never reached
    the controller (it stored events below that one). The next attempt first sends that
    event again, unchanged, then continues the numbering: the stored history has no gap."""
    from trainer.actions import run_job

    spec = make_spec(tiny_model, toy_data, job_id="missed", training={"checkpoint_every": 2})
    first = run_job(spec, worker_env)
    seen = []
    for event in first:
        seen.append(event)
        if event.type == "checkpoint":
            break
    first.close()
    stored = seen[:-1]  # the checkpoint event was lost on its way
    again = run({**spec, "first_seq": len(stored)}, worker_env)
    assert again[0] == seen[-1].model_dump(mode="json")
    assert again[1]["type"] == "started" and again[1]["data"]["resumed_from_step"] == 2
    _check_stream_continues(stored, again)


def test_a_retry_without_the_earlier_log_numbers_from_first_seq(
    tiny_model: Path, toy_data: Path, worker_env: Any
) -> None:
    """A worker that lacks the earlier attempt's log (another volume) still numbers its
    events after the ones the controller holds, so none of them is taken for a duplicate."""
    spec = make_spec(tiny_model, toy_data, job_id="elsewhere", first_seq=7)
    events = run(spec, worker_env)
    assert [e["seq"] for e in events] == list(range(7, 7 + len(events)))
    assert events[0]["type"] == "started" and events[-1]["type"] == "completed"


def _check_stream_continues(before: list[Event], after: list[dict[str, Any]]) -> None:
    seqs = [e.seq for e in before] + [e["seq"] for e in after]
    assert seqs == list(range(len(seqs)))


def test_unexpected_payload_is_one_failed_event_then_the_platform_error() -> None:
    *events, error = list(handler({"id": "x", "input": ["not", "a", "spec"]}))
    assert [e["type"] for e in events] == ["failed"]
    assert events[0]["data"]["kind"] == "bad_input"
    # runpod-python ends a generator job FAILED on a yielded {"error": ...}: its own shape.
    parsed = json.loads(error["error"])
    assert parsed["error_type"] == "bad_input"
    assert parsed["error_message"] == events[0]["data"]["message"]


def test_cli_prints_json_lines_and_exit_status(
    tiny_model: Path, toy_data: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(make_spec(tmp_path / "missing", toy_data)))
    env = {
        "CHECKPOINT_DIR": str(tmp_path / "ck"),
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "--spec", str(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1
    assert lines[-1]["type"] == "failed" and lines[-1]["data"]["kind"] == "model_unavailable"


@pytest.fixture
def worker_logging() -> Any:
    """The worker's logging setup (`configure_logging`), undone after the test."""
    import logging

    from trainer.handler import QUIET_LOGGERS, configure_logging

    before = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    configure_logging()
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def test_worker_logs_never_carry_a_signed_url_or_the_hf_token(
    tiny_model: Path, worker_env: Any, http_server: Any, worker_logging: Any, caplog: Any
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    http_server.store.files["/data/train.jsonl"] = "".join(
        json.dumps(r) + "\n" for r in toy_rows()
    ).encode()
    env = dataclasses.replace(worker_env, hf_token="hf_LoggedNowhere123")
    names = [*ADAPTER_FILES, "events.jsonl", "result.json"]
    spec = make_spec(
        tiny_model,
        data={"train_url": http_server.url("/data/train.jsonl")},
        training={"max_steps": 2},
        output={"upload_urls": {n: http_server.url(f"/up/{n}") for n in names}},
    )
    events = run(spec, env)
    assert events[-1]["type"] == "completed", events[-1]
    assert len(http_server.store.puts) == len(names)  # every upload went through the worker
    # A failing download and a failing job log too; neither may quote the URL.
    bad = make_spec(
        tiny_model,
        data={"train_url": http_server.url("/data/missing.jsonl")},
        output={"upload_urls": {"result.json": "http://127.0.0.1:9/up?token=secret-signature"}},
    )
    assert run(bad, env)[-1]["data"]["kind"] == "download_failed"
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "nothing was logged at all: the check below would prove nothing"
    assert "secret-signature" not in logged and "?token=" not in logged
    assert "hf_LoggedNowhere123" not in logged
