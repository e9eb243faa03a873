"""Reading a job's state from the endpoint, and from the worker's uploaded log.

`pull` reads `/stream` first, then `/status` (so the status is at least as new as the
events), and once the job has ended `/stream` again for what it streamed in between (a
job that fails carries no `output`: runpod-python replaces it with its `error`, read in
any of its forms as a `JobError`). When the job has ended, or the endpoint no longer knows it (404 once RunPod's
30-minute retention passed), and its output lacks the final event, the `events.jsonl` and
`result.json` the worker uploaded next to its adapter are read too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from core.clients.runpod import JobError, RunPodClient
from core.clients.runpod import JobNotFound as EndpointForgotJob
from core.clients.storage import BlobStore, job_key
from core.db.tables import TERMINAL_STATUSES
from core.errors import NotFound
from trainer.shared.spec import Event

log = logging.getLogger("brightrun.jobs")


@dataclass
class Pulled:
    outputs: list[Any]
    status: str | None = None  # RunPod status, None when the endpoint forgot the job
    delay_ms: int | None = None
    execution_ms: int | None = None
    error: JobError | None = None
    final_output: Any = None
    stored_events: list[dict[str, Any]] | None = None
    stored_result: dict[str, Any] | None = None

    @property
    def gone(self) -> bool:
        return self.status is None

    @property
    def ended(self) -> bool:
        return self.gone or self.status in TERMINAL_STATUSES

    def events(self) -> list[Event]:
        """Every event pulled: streamed, in the final output, and from the stored log."""
        new = parse_events(self.outputs)
        if isinstance(self.final_output, list):
            new += parse_events(self.final_output)
        if self.stored_events:
            new += parse_events(self.stored_events)
        return new


def parse_events(items: Iterable[Any]) -> list[Event]:
    out = []
    for item in items:
        try:
            out.append(Event.model_validate(item))
        except ValidationError:
            log.warning("ignoring a stream item that is not an event: %.200r", item)
    return out


def _has_final(items: Iterable[Any]) -> bool:
    return any(e.type in ("completed", "failed") for e in parse_events(items))


def read_stored_log(
    store: BlobStore, owner: str, job_id: str
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """The `events.jsonl` and `result.json` the worker uploaded (None where missing)."""
    events = result = None
    try:
        text = store.get_bytes("adapters", job_key(owner, job_id, "events.jsonl")).decode(
            "utf-8", "replace"
        )
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
    except NotFound:
        log.debug("job %s: no events.jsonl stored (yet)", job_id)
    except json.JSONDecodeError:
        log.warning("job %s: stored events.jsonl is not valid JSON lines; ignored", job_id)
    try:
        loaded = json.loads(store.get_bytes("adapters", job_key(owner, job_id, "result.json")))
        result = loaded if isinstance(loaded, dict) else None
    except NotFound:
        log.debug("job %s: no result.json stored (yet)", job_id)
    except json.JSONDecodeError:
        log.warning("job %s: stored result.json is not valid JSON; ignored", job_id)
    return events, result


def pull(client: RunPodClient, store: BlobStore, owner: str, job_id: str, rid: str) -> Pulled:
    """Read the endpoint and, when needed, the worker's uploaded log (module docstring)."""
    pulled = Pulled(outputs=[])
    try:
        pulled.outputs = client.stream(rid).outputs
        st = client.status(rid)
        pulled.status, pulled.delay_ms, pulled.execution_ms = (
            st.status,
            st.delay_ms,
            st.execution_ms,
        )
        pulled.error, pulled.final_output = st.job_error, st.output
        if st.terminal:
            pulled.outputs += client.stream(rid).outputs
    except EndpointForgotJob:
        pulled.status = None
    final_output = pulled.final_output if isinstance(pulled.final_output, list) else []
    if pulled.ended and (pulled.gone or not _has_final(final_output)):
        pulled.stored_events, pulled.stored_result = read_stored_log(store, owner, job_id)
    return pulled
