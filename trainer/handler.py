"""The RunPod Serverless handler: a thin adapter around `trainer.actions.run_job` (which
validates the payload and runs its action: `train`, `merge` or `cache_model`).

`handler(job)` takes RunPod's job dict (`{"id": ..., "input": <JobSpec JSON>}`) and yields
each event as a plain dict (`Event.model_dump(mode="json")`):

    {"seq": 0, "type": "started", "ts": 1767225600.0, "data": {...}}

The last one is always `completed` or `failed`. An error outside the job's own lifecycle
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

import logging
import time
from collections.abc import Iterator
from typing import Any

from trainer.actions import run_job
from trainer.env import WorkerEnv
from trainer.report import failure_data

log = logging.getLogger("brightrun.trainer")

# Loggers that write request URLs (signed URLs are credentials): WARNING and above only.
QUIET_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3")


def handler(job: dict[str, Any], env: WorkerEnv | None = None) -> Iterator[dict[str, Any]]:
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


def configure_logging(level: int = logging.INFO) -> None:
    """The worker's logging: `level` to stderr, the HTTP clients quiet (see the docstring)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    import runpod

    configure_logging()
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})


if __name__ == "__main__":
    main()
