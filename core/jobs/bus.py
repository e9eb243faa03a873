"""Job events: what `core.jobs` tells the parts that care when a job ends.

A small, explicit subscriber list: `subscribe(handler)` adds a handler, `publish(event)`
calls every handler in the order they subscribed. `core.jobs.subscribers` subscribes the
parts that act on an ended job (notification, evaluation, the out-of-memory relaunch), so
the sync loop never imports them. A handler must not raise: an error it lets through is
logged and the next handler still runs (a job's outcome never depends on them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.db.tables import Job
from core.settings import Settings
from core.users import Actor

log = logging.getLogger("brightrun.jobs")


@dataclass(frozen=True)
class JobEnded:
    """A job reached a terminal status. `first`: this process claimed the job's end (its
    notification), so exactly one process acts on it once."""

    actor: Actor
    settings: Settings
    job: Job
    first: bool
    store: Any  # core.clients.storage.BlobStore


Handler = Callable[[JobEnded], None]
_handlers: list[Handler] = []


def subscribe(handler: Handler) -> Handler:
    """Call `handler` for every ended job (idempotent; usable as a decorator)."""
    if handler not in _handlers:
        _handlers.append(handler)
    return handler


def unsubscribe(handler: Handler) -> None:
    if handler in _handlers:
        _handlers.remove(handler)


def publish(event: JobEnded) -> None:
    for handler in list(_handlers):
        try:
            handler(event)
        except Exception:  # noqa: BLE001 - one part's failure never stops the others
            log.exception("job %s: %s failed after the job ended", event.job.id, handler.__name__)
