"""The RunPod Serverless handler: a thin adapter around `trainer.actions.run_job` (which
validates the payload and runs its action: `train`, `merge` or `cache_model`).

`events(job)` takes RunPod's job dict (`{"id": ..., "input": <JobSpec JSON>}`) and yields
each event as a plain dict (`Event.model_dump(mode="json")`):

    {"seq": 0, "type": "started", "ts": 1767225600.0, "data": {...}}

The last one is always `completed` or `failed`. `handler(job)` is what RunPod runs: the
same events, and after a `failed` one `{"error": <JSON string>}`, which makes
runpod-python end the job FAILED (see `handler`). An error outside the job's own lifecycle
becomes one `failed` event of kind `internal` (with its traceback on stderr), never a
silent end. The worker's environment (`trainer.env.WorkerEnv`) is read here, at the edge.

Run as `python -u -m trainer.handler` in the image (starts the RunPod worker loop with
`return_aggregate_stream`, so the yielded events are also the job's final output).

Logging (`configure_logging`): INFO to stderr, which RunPod keeps as the worker's log. The
HTTP clients' loggers (httpx and httpcore, and huggingface_hub's httpx2/httpcore2) stay at
WARNING: at INFO they write every request's full URL, and the worker's downloads and
uploads go to signed URLs whose query string is the credential. Nothing the trainer itself
logs carries a URL or the HF token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from trainer.actions import run_job
from trainer.env import WorkerEnv
from trainer.logs import QUIET_LOGGERS, configure_logging  # noqa: F401 - QUIET_LOGGERS: read here too
from trainer.report import failure_data

log = logging.getLogger("brightrun.trainer")


def events(job: dict[str, Any], env: WorkerEnv | None = None) -> Iterator[dict[str, Any]]:
    """The job's events as plain dicts; the last one is `completed` or `failed`."""
    last_seq = -1
    try:
        payload = job.get("input") if isinstance(job, dict) else None
        for event in run_job(
            payload if payload is not None else {}, env or WorkerEnv.from_environ()
        ):
            last_seq = event.seq
            yield event.model_dump(mode="json")
    except Exception as exc:
        log.exception("training handler failed outside the job lifecycle")
        yield {"seq": last_seq + 1, "type": "failed", "ts": time.time(), "data": failure_data(exc)}


def handler(job: dict[str, Any], env: WorkerEnv | None = None) -> Iterator[dict[str, Any]]:
    """RunPod's generator handler: every event, then, after a `failed` one, the job's error.

    runpod-python ends a generator job with an error when a yielded dict has a truthy
    `error` (that dict is not streamed), so a failed job is FAILED on the platform too,
    after its `failed` event was streamed (and its log uploaded). The error is a JSON
    string in runpod-python's own shape (`error_type`, `error_message`)."""
    yield from with_platform_error(events(job, env))


def with_platform_error(stream: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`stream`'s events, and after a `failed` one the job's error (see `handler`)."""
    for event in stream:
        yield event
        if event.get("type") == "failed":
            yield {"error": job_error(event.get("data") or {})}
            return


def job_error(data: dict[str, Any]) -> str:
    """The platform-side error of a failed job, from its `failed` event's data."""
    return json.dumps(
        {
            "error_type": data.get("kind") or "internal",
            "error_message": data.get("message") or "",
            "suggestion": data.get("suggestion"),
        }
    )


def main() -> None:
    import runpod

    configure_logging()
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})


if __name__ == "__main__":
    main()
