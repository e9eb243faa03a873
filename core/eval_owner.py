"""Who runs an evaluation, and what happens when that process is gone.

An evaluation runs in a background thread of the process that started it (the syncer or a
dashboard that saw the job end, or `brightrun adapters eval`). Its `eval_scores` name that
process while it is `pending` or `running`: `owner` = {host, pid}, with `updated_at`. An
owner is alive when, on this host, its pid still runs, and, on another host, it wrote
within `EVAL_LEASE_S` seconds. At most `EVAL_MAX_RUNNING` evaluations with a live owner
run at once; one started beyond that stays `pending` without an owner.

`adopt(settings, run)`, called on every pass of the background syncer, takes over what has
no live owner: a `pending` one is claimed (under the version's row lock, so one syncer of
many claims it) and run by `run` while there is room; a `running` one whose process died
is marked `failed` with the reason and how to run it again (its server-side state is
unknown, so it is not resumed). Errors are logged and never stop the pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.db import repo, session_scope
from core.db.tables import AdapterVersion
from core.errors import BrightRunError
from core.jobs.quotas import lock_row
from core.settings import Settings
from core.users import SYSTEM_ACTOR, Actor

log = logging.getLogger("brightrun.evaluate")

IN_FLIGHT = ("pending", "running")


def owner_tag() -> dict[str, Any]:
    """This process, as an evaluation's owner."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but it runs
    return True


def owner_alive(
    scores: Mapping[str, Any], settings: Settings, now: dt.datetime | None = None
) -> bool:
    """Whether the evaluation's owning process is still there (module docstring)."""
    owner = scores.get("owner")
    if not isinstance(owner, Mapping) or not owner.get("pid"):
        return False
    if owner.get("host") == socket.gethostname():
        return _pid_runs(int(owner["pid"]))
    try:
        written = dt.datetime.fromisoformat(str(scores.get("updated_at")))
    except ValueError:
        return False
    age = ((now or dt.datetime.now(dt.UTC)) - written).total_seconds()
    return age < settings.eval_lease_s


def running_now(settings: Settings) -> int:
    """How many evaluations have a live owner (the bound counts these)."""
    with session_scope(settings) as s:
        flights = repo.admin_list_evaluations_in_flight(SYSTEM_ACTOR, s)
        return sum(owner_alive(v.eval_scores or {}, settings) for v in flights)


def has_room(settings: Settings) -> bool:
    return running_now(settings) < settings.eval_max_running


@dataclass
class AdoptReport:
    started: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def adopt(settings: Settings, run: Callable[[Actor, Settings, str], Any]) -> AdoptReport:
    """Take over the evaluations without a live owner (module docstring). `run(actor,
    settings, version_id)` starts one in the background."""
    report = AdoptReport()
    with session_scope(settings) as s:
        flights = repo.admin_list_evaluations_in_flight(SYSTEM_ACTOR, s)
        orphans = [
            (v.id, v.owner_id) for v in flights if not owner_alive(v.eval_scores or {}, settings)
        ]
        live = len(flights) - len(orphans)
    for version_id, owner_id in orphans:
        try:
            outcome = _take_over(
                settings, version_id, owner_id, room=live < settings.eval_max_running
            )
        except BrightRunError as e:
            log.warning("evaluation of %s could not be taken over: %s", version_id, e)
            continue
        if outcome is None:
            continue
        kind, actor = outcome
        if kind == "start":
            live += 1
            report.started.append(version_id)
            run(actor, settings, version_id)
        else:
            getattr(report, kind).append(version_id)
    return report


def _take_over(
    settings: Settings, version_id: str, owner_id: str, *, room: bool
) -> tuple[str, Actor] | None:
    """Under the version's row lock: fail a dead `running` one, claim a `pending` one when
    there is room (kind "start"), else leave it waiting. None: someone else took it."""
    with session_scope(settings) as s:
        lock_row(s, AdapterVersion, version_id)
        actor = repo.admin_actor_for(SYSTEM_ACTOR, s, owner_id)
        scores = dict(repo.get_version(actor, s, version_id).eval_scores or {})
        if scores.get("status") not in IN_FLIGHT or owner_alive(scores, settings):
            return None
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if scores["status"] == "running":
            gone = scores.get("owner") or {}
            repo.update_version(
                actor,
                s,
                version_id,
                eval_scores={
                    "status": "failed",
                    "error": (
                        f"the process running this evaluation (pid {gone.get('pid')} on "
                        f"{gone.get('host')}) stopped before it finished; run "
                        f"`brightrun adapters eval {version_id}` to evaluate again"
                    ),
                    "updated_at": now,
                },
            )
            log.warning("evaluation of %s: its process is gone; marked failed", version_id)
            return "failed", actor
        if not room:
            return "waiting", actor
        claimed = {**scores, "owner": owner_tag(), "updated_at": now}
        repo.update_version(actor, s, version_id, eval_scores=claimed)
        return "start", actor
