"""`reconcile(settings)`: sync every user's unfinished jobs once (on start, and on every
pass of the background syncer, `core.syncer`). One job's error is recorded in the report
and never stops the pass."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.clients.runpod import RunPodClient
from core.clients.storage import BlobStore
from core.db import repo, session_scope
from core.db.tables import TERMINAL_STATUSES
from core.errors import BrightRunError
from core.jobs.dispatch import blob_store, job_client
from core.jobs.sync import sync
from core.settings import Settings
from core.users import SYSTEM_ACTOR

log = logging.getLogger("brightrun.jobs")


@dataclass(frozen=True)
class SyncReport:
    synced: int
    ended: int
    errors: dict[str, str]


def reconcile(
    settings: Settings, *, client: RunPodClient | None = None, store: BlobStore | None = None
) -> SyncReport:
    """Sync every user's unfinished jobs once."""
    store = blob_store(settings, store)
    with session_scope(settings) as s:
        pending = [(j.id, j.owner_id) for j in repo.admin_list_unfinished_jobs(SYSTEM_ACTOR, s)]
        owners = {
            uid: repo.admin_actor_for(SYSTEM_ACTOR, s, uid) for uid in {o for _, o in pending}
        }
    ended, errors = 0, {}
    with job_client(settings, client) as rp:
        for job_id, owner in pending:
            try:
                job = sync(owners[owner], settings, job_id, client=rp, store=store)
            except BrightRunError as e:  # RunPodError included
                errors[job_id] = f"{type(e).__name__}: {e}"
                log.warning("sync of job %s failed: %s", job_id, errors[job_id])
                continue
            ended += job.status in TERMINAL_STATUSES
    return SyncReport(synced=len(pending) - len(errors), ended=ended, errors=errors)
