"""Checkpoint retention on the volume, and what the volume holds and costs.

A job's checkpoints live in two places on the volume: its training state
(`checkpoints/<job id>/step-NNNNNNN`, `latest` naming the newest complete one, which a retry
resumes from) and the PEFT copy of each (`adapters/.checkpoints/<job id>/step-N`, which a
user may promote to a version). `apply(settings)` keeps, per job, the
`CHECKPOINT_KEEP_LAST` newest of each (never the one `latest` names, never a promoted
copy); once a job has been finished `CHECKPOINT_RETENTION_DAYS`, its training state goes
(it can no longer resume) and so do its unpromoted copies, whose versions are then marked
off the volume. Folders of jobs BrightRun does not know are left alone, and so are those
of a job still running apart from its older steps.

It is applied by the background syncer to the local volume folder (`<data_dir>/volume`).
RunPod's network volume is not visible from the dashboard: run the same rule there with
`brightrun`'s settings on a pod that mounts it (docs/reliability.md).

`volume_usage(settings)` measures the local volume folder: bytes per part (models,
checkpoints, adapters) and the monthly cost at `VOLUME_USD_PER_GB_MONTH`.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.db import repo, session_scope
from core.db.tables import TERMINAL_STATUSES, Job, utcnow
from core.settings import Settings
from core.users import SYSTEM_ACTOR

log = logging.getLogger("brightrun.retention")

GB = 1000**3  # as billed and as the dashboard shows sizes
PARTS = ("models", "checkpoints", "adapters")


def local_volume(settings: Settings) -> Path:
    """The local stack's volume folder (what RunPod mounts at /runpod-volume)."""
    return Path(settings.data_dir).resolve() / "volume"


@dataclass
class RetentionReport:
    removed: list[str] = field(default_factory=list)  # folders, relative to the volume
    freed_bytes: int = 0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _step(folder: Path) -> int | None:
    name = folder.name
    if not folder.is_dir() or not name.startswith("step-") or name.endswith(".tmp"):
        return None
    try:
        return int(name.split("-", 1)[1])
    except ValueError:
        return None


def _remove(folder: Path, volume: Path, report: RetentionReport) -> None:
    size = _size(folder)
    shutil.rmtree(folder, ignore_errors=True)
    report.removed.append(str(folder.relative_to(volume)))
    report.freed_bytes += size


def _expired(job: Job, settings: Settings, now: dt.datetime) -> bool:
    if job.status not in TERMINAL_STATUSES or job.finished_at is None:
        return False
    ended = job.finished_at if job.finished_at.tzinfo else job.finished_at.replace(tzinfo=dt.UTC)
    return (now - ended).total_seconds() >= settings.checkpoint_retention_days * 86400


def _trim_state(folder: Path, keep: int, expired: bool, done: bool) -> list[Path]:
    """The training-state folders of one job to remove."""
    if expired:
        return [folder]
    pointer = folder / "latest"
    latest = pointer.read_text().strip() if pointer.is_file() else None
    steps = sorted((s, p) for p in folder.iterdir() if (s := _step(p)) is not None)
    drop = [p for _, p in steps[:-keep] if p.name != latest]
    if done:  # a half-written save of a job that ended is never completed
        drop += [p for p in folder.iterdir() if p.is_dir() and p.name.endswith(".tmp")]
    return drop


def _trim_copies(folder: Path, keep: int, expired: bool, promoted: set[str]) -> list[Path]:
    """The PEFT checkpoint copies of one job to remove (promoted ones stay)."""
    steps = sorted((s, p) for p in folder.iterdir() if (s := _step(p)) is not None)
    candidates = [p for _, p in (steps if expired else steps[:-keep])]
    return [p for p in candidates if str(p.resolve()) not in promoted]


def apply(settings: Settings, volume: Path | None = None, now: dt.datetime | None = None):
    """Apply the retention rule to the volume folder (module docstring)."""
    volume = (volume or local_volume(settings)).resolve()
    now = now or utcnow()
    report = RetentionReport()
    state_root, copies_root = volume / "checkpoints", volume / "adapters" / ".checkpoints"
    job_ids = {
        p.name for root in (state_root, copies_root) if root.is_dir() for p in root.iterdir()
    }
    keep = settings.checkpoint_keep_last
    for job_id in sorted(job_ids):
        with session_scope(settings) as s:
            job = repo.admin_find_job(SYSTEM_ACTOR, s, job_id)
            if job is None:
                continue
            owner = repo.admin_actor_for(SYSTEM_ACTOR, s, job.owner_id)
            versions = [v for v in repo.list_versions(owner, s, job_id=job_id) if v.volume_path]
            promoted = {
                str(Path(v.volume_path).resolve()) for v in versions if v.version is not None
            }
            expired, done = _expired(job, settings, now), job.status in TERMINAL_STATUSES
            drop = []
            if (state_root / job_id).is_dir():
                drop += _trim_state(state_root / job_id, keep, expired, done)
            if (copies_root / job_id).is_dir():
                drop += _trim_copies(copies_root / job_id, keep, expired, promoted)
            gone = {str(p.resolve()) for p in drop}
            for v in versions:
                if v.version is None and str(Path(v.volume_path).resolve()) in gone:
                    repo.update_version(owner, s, v.id, volume_path=None)
        for folder in drop:
            _remove(folder, volume, report)
    if report.removed:
        log.info(
            "retention: removed %d folder(s), %.1f MB",
            len(report.removed),
            report.freed_bytes / 1e6,
        )
    return report


@dataclass(frozen=True)
class VolumeUsage:
    path: str
    bytes_by_part: dict[str, int]
    usd_per_gb_month: float

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_part.values())

    @property
    def usd_per_month(self) -> float:
        return self.total_bytes / GB * self.usd_per_gb_month


def volume_usage(settings: Settings, volume: Path | None = None) -> VolumeUsage:
    """What the local volume folder holds, per part, and what that costs a month."""
    volume = volume or local_volume(settings)
    parts = {part: _size(volume / part) if (volume / part).exists() else 0 for part in PARTS}
    return VolumeUsage(str(volume), parts, settings.volume_usd_per_gb_month)
