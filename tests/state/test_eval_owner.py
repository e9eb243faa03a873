"""Evaluations outlive the process that started them: the syncer's pass (`core.eval_owner`)
settles one whose process died, starts a waiting one while fewer than EVAL_MAX_RUNNING run,
and leaves one whose owner lives alone. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess

from core import db, eval_owner
from core.db import repo
from core.settings import Settings
from core.users import Actor

ALICE = Actor("user-alice", "alice@example.com", "member")


def _versions(settings: Settings, scores: list[dict]) -> list[str]:
    ids = []
    with db.session_scope(settings) as s:
        for sc in scores:
            v = repo.create_adapter_version(ALICE, s, adapter_name="bot", base_model="tiny")
            repo.update_version(ALICE, s, v.id, eval_scores=sc)
            ids.append(v.id)
    return ids


def _scores(settings: Settings, version_id: str) -> dict:
    with db.session_scope(settings) as s:
        return dict(repo.get_version(ALICE, s, version_id).eval_scores or {})


def test_the_syncer_settles_and_starts_evaluations_whose_process_is_gone(
    settings: Settings,
) -> None:
    gone = subprocess.Popen(["true"])  # a process that ran and is gone
    gone.wait()
    here = socket.gethostname()
    now = dt.datetime.now(dt.UTC)
    long_ago = (now - dt.timedelta(hours=2)).isoformat(timespec="seconds")
    recent = now.isoformat(timespec="seconds")
    died, waiting, silent, live = _versions(
        settings,
        [
            {"status": "running", "owner": {"host": here, "pid": gone.pid}, "updated_at": recent},
            {"status": "pending", "owner": None, "updated_at": recent},
            {"status": "pending", "owner": {"host": "elsewhere", "pid": 1}, "updated_at": long_ago},
            {
                "status": "running",
                "owner": {"host": here, "pid": os.getpid()},
                "updated_at": recent,
            },
        ],
    )
    settings = settings.model_copy(update={"eval_max_running": 2})
    ran: list[str] = []
    report = eval_owner.adopt(settings, lambda actor, st, vid: ran.append(vid))

    failed = _scores(settings, died)
    assert failed["status"] == "failed" and "stopped before it finished" in failed["error"]
    assert f"brightrun adapters eval {died}" in failed["error"]
    assert report.failed == [died]
    # One slot was free (the live one holds the other): the oldest waiting one starts.
    assert ran == report.started == [waiting] and report.waiting == [silent]
    assert _scores(settings, waiting)["owner"]["pid"] == os.getpid()
    assert _scores(settings, live)["status"] == "running"
    assert eval_owner.running_now(settings) == 2

    # The next pass finds nothing new to start while both slots are taken...
    again = eval_owner.adopt(settings, lambda actor, st, vid: ran.append(vid))
    assert again.started == [] and again.waiting == [silent] and ran == [waiting]
    # ...and starts the last one once a slot frees up.
    with db.session_scope(settings) as s:
        repo.update_version(ALICE, s, live, eval_scores={"status": "done", "updated_at": recent})
    third = eval_owner.adopt(settings, lambda actor, st, vid: ran.append(vid))
    assert third.started == [silent] and ran == [waiting, silent]
