"""Reading the actor's jobs and their events (another user's job is `NotFound`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.db import repo, session_scope
from core.db.tables import Job
from core.settings import Settings
from core.users import Actor


def get(actor: Actor, settings: Settings, job_id: str) -> Job:
    with session_scope(settings) as s:
        return repo.get_job(actor, s, job_id)


def list_jobs(
    actor: Actor, settings: Settings, *, statuses: Iterable[str] | None = None, limit: int = 200
) -> list[Job]:
    with session_scope(settings) as s:
        return repo.list_jobs(actor, s, statuses=statuses, limit=limit)


def events(
    actor: Actor,
    settings: Settings,
    job_id: str,
    *,
    after_seq: int = -1,
    types: Iterable[str] | None = None,
) -> list[Any]:
    with session_scope(settings) as s:
        return repo.list_events(actor, s, job_id, after_seq=after_seq, types=types)
