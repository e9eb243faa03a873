"""Checkpoint retention on the volume (`core.retention`): a job keeps its last N
checkpoints, never the one a retry resumes from; a finished job's go after D days unless
promoted; the volume's usage and monthly cost. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from core import db, queries, retention
from core.db import repo
from core.db.tables import utcnow
from core.settings import Settings
from core.users import Actor
from tests.state.test_repo import _job

ALICE = Actor("user-alice", "alice@example.com", "member")


def _lay_out(volume: Path, job_id: str, steps: list[int], latest: int) -> tuple[Path, Path]:
    state = volume / "checkpoints" / job_id
    copies = volume / "adapters" / ".checkpoints" / job_id
    for step in steps:
        (state / f"step-{step:07d}").mkdir(parents=True)
        (state / f"step-{step:07d}" / "trainable.safetensors").write_bytes(b"w" * 1000)
        (copies / f"step-{step}").mkdir(parents=True)
        (copies / f"step-{step}" / "adapter_model.safetensors").write_bytes(b"a" * 1000)
    (state / "latest").write_text(f"step-{latest:07d}")
    (state / f"step-{max(steps) + 2:07d}.tmp").mkdir()  # a save cut short
    return state, copies


def _checkpoint_versions(settings: Settings, job_id: str, copies: Path, steps: list[int]) -> dict:
    out = {}
    with db.session_scope(settings) as s:
        for step in steps:
            v = repo.create_adapter_version(
                ALICE,
                s,
                adapter_name="bot",
                base_model="tiny",
                job_id=job_id,
                is_checkpoint=True,
                step=step,
                volume_path=str(copies / f"step-{step}"),
            )
            out[step] = v.id
    return out


def test_a_job_keeps_its_last_checkpoints_and_a_finished_one_drops_them_after_d_days(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"checkpoint_keep_last": 2, "checkpoint_retention_days": 7}
    )
    volume = retention.local_volume(settings)
    with db.session_scope(settings) as s:
        job_id = _job(ALICE, s).id
    steps = [2, 4, 6, 8, 10]
    # The retry would resume from step 4 (its `latest`): it stays whatever its age.
    state, copies = _lay_out(volume, job_id, steps, latest=4)
    versions = _checkpoint_versions(settings, job_id, copies, steps)
    with db.session_scope(settings) as s:
        repo.promote_checkpoint(ALICE, s, versions[2])  # the user kept step 2 as a version
    before = queries.volume_costs(settings)

    report = retention.apply(settings)  # the job is still running
    assert sorted(p.name for p in state.iterdir() if p.name.startswith("step-")) == [
        "step-0000004",
        "step-0000008",
        "step-0000010",
        "step-0000012.tmp",  # it may be being written right now
    ]
    assert sorted(p.name for p in copies.iterdir()) == ["step-10", "step-2", "step-8"]
    assert report.freed_bytes == 2 * 1000 + 2 * 1000
    with db.session_scope(settings) as s:
        off = {v.step for v in repo.list_versions(ALICE, s, job_id=job_id) if not v.volume_path}
    assert off == {4, 6}  # their copies are gone from the volume
    after = queries.volume_costs(settings)
    assert after.total_bytes == before.total_bytes - report.freed_bytes
    assert after.usd_per_month == after.total_bytes / 1e9 * settings.volume_usd_per_gb_month

    with db.session_scope(settings) as s:
        repo.update_job(ALICE, s, job_id, status="COMPLETED", finished_at=utcnow())
    retention.apply(settings)  # just finished: only the cut-short save goes
    assert not (state / "step-0000012.tmp").exists() and (state / "step-0000010").is_dir()
    retention.apply(settings, now=utcnow() + dt.timedelta(days=8))
    assert not state.exists()
    assert [p.name for p in copies.iterdir()] == ["step-2"]  # promoted: kept
    assert queries.volume_costs(settings).bytes_by_part["checkpoints"] == 0


def test_folders_of_unknown_jobs_are_left_alone(settings: Settings) -> None:
    volume = retention.local_volume(settings)
    state, _ = _lay_out(volume, "job-not-ours", [1, 2, 3, 4, 5], latest=5)
    settings = settings.model_copy(update={"checkpoint_keep_last": 1})
    assert retention.apply(settings, now=utcnow() + dt.timedelta(days=365)).removed == []
    assert len(list(state.iterdir())) == 7
