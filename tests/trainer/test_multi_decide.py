"""Which rank a failed multi-GPU job names (`trainer.multi.decide`), from the ranks'
outcome files and torchrun's record, in the three ways a rank takes a job down: killed
from outside, a bug (or out of memory) in one rank, one rank hung until the others'
collectives timed out. The other ranks' own failures are consequences in each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.multi import RECORD, decide
from trainer.rank import outcome_file


def _failed(rank: int, kind: str = "internal", *, waited: bool = False, ts: float = 1.0) -> Any:
    data = {"kind": kind, "message": f"error in rank {rank}", "suggestion": "s"}
    return {"rank": rank, "ok": False, "data": data, "peer_lost": waited, "ts": ts}


def _write(run: Path, outcomes: dict[int, Any], failures: dict[str, Any]) -> None:
    for r, o in outcomes.items():
        outcome_file(run, r).write_text(json.dumps(o))
    (run / RECORD).write_text(json.dumps({"failures": failures}))


def test_a_killed_rank_is_named_even_when_the_other_reported_first(tmp_path: Path) -> None:
    _write(tmp_path, {0: _failed(0, ts=1.0)}, {"1": {"exitcode": -9, "signal": "SIGKILL", "ts": 2}})
    kind, data = decide(tmp_path, 2, [])
    assert (kind, data["rank"]) == ("failed", 1) and "killed by SIGKILL" in data["message"]


def test_a_rank_with_a_bug_is_named_not_the_one_torchrun_stopped(tmp_path: Path) -> None:
    _write(tmp_path, {1: _failed(1, ts=5.0)}, {"1": {"exitcode": 1, "signal": None, "ts": 5}})
    kind, data = decide(tmp_path, 2, [])
    assert data["rank"] == 1 and data["message"] == "rank 1 of 2 failed: error in rank 1"


def test_out_of_memory_wins_over_a_peers_lost_connection(tmp_path: Path) -> None:
    outcomes = {0: _failed(0, ts=1.0), 1: _failed(1, "out_of_memory", ts=2.0)}
    _write(tmp_path, outcomes, {"0": {"exitcode": 1, "signal": None, "ts": 1}})
    assert decide(tmp_path, 2, [])[1]["kind"] == "out_of_memory"
    assert decide(tmp_path, 2, [])[1]["rank"] == 1


def test_a_hung_rank_is_named_after_the_others_timed_out(tmp_path: Path) -> None:
    _write(tmp_path, {0: _failed(0, waited=True)}, {"0": {"exitcode": 1, "signal": None, "ts": 9}})
    kind, data = decide(tmp_path, 2, [])
    assert data["rank"] == 1 and "without reporting" in data["message"]


def test_every_rank_completed_is_rank_zeros_completion(tmp_path: Path) -> None:
    done = {"reason": "finished", "adapter": {}, "summary": {}}
    _write(tmp_path, {0: {"ok": True, "data": done, "ts": 1}, 1: {"ok": True, "ts": 1}}, {})
    assert decide(tmp_path, 2, []) == ("completed", done)


def test_a_worker_with_fewer_gpus_than_asked_refuses_the_job(
    monkeypatch: Any, tmp_path: Path
) -> None:
    import torch

    from tests.trainer.conftest import make_spec, run
    from trainer.env import WorkerEnv

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    env = WorkerEnv(tmp_path / "m", tmp_path / "c", None, cached_models_dir=tmp_path / "h")
    spec = make_spec(tmp_path / "model", tmp_path / "rows.jsonl", gpus=4, sharding="fsdp")
    (final,) = run(spec, env)
    assert final["type"] == "failed" and final["data"]["kind"] == "bad_input"
    assert "asks for 4 GPUs and this worker has 1" in final["data"]["message"]
    assert "--gpu-count 4" in final["data"]["suggestion"]
