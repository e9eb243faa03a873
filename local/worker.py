"""One local worker process: a RunPod Serverless worker that takes one job.

`worker_main` runs in a fresh process per job (started by `local.endpoint`). It becomes
the leader of its own process group (so the endpoint can kill everything the handler
started), drops the controller's secrets from its environment (a RunPod worker never
holds them; `HF_TOKEN` stays, as the worker's own), imports the handler and reports
`("ready", None)`. Then runpod-python's own worker loop runs the job, exactly the code
`runpod.serverless.start` runs on RunPod: `rp_scale.JobScaler` (with
`refresh_worker`, so it stops after this one job) hands it to `rp_job.handle_job`, which
calls `run_job_generator` for a generator handler (each yielded value streamed; a yielded
dict with a truthy `error` ends the job as an error; an exception becomes a plain-string
error) or `run_job` for a plain one (an exception becomes the JSON `error_type` /
`error_message` / `error_traceback` string). With `return_aggregate_stream` the output
of a completed generator job is the list of its chunks.

Only the transport is local: where runpod-python POSTs to RunPod's job-stream and
job-done URLs (`rp_http.stream_result` / `send_result`), this process sends the same
JSON text to the endpoint through `conn`: `("stream", json)` per chunk, then
`("done", json)` with the job's result (`{"output": ...}` or `{"error": ...}`). Anything
that fails before the loop starts is reported as `("error", message)`. If the endpoint
process dies, the worker exits within a second.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import threading
import time
from typing import Any

# Controller-side secrets a worker must never see.
CONTROLLER_SECRETS = (
    "GPU_CLUSTER_API_KEY",
    "RUNPOD_API_KEY",
    "SUPABASE_KEY",
    "SUPABASE_ANON_KEY",
    "DATABASE_URL",
    "URL_SIGNING_KEY",
    "NOTIFY_WEBHOOK_URL",
    "INFERENCE_API_KEY",
)
# Set on RunPod only; without them runpod-python's loop accepts a local job fetcher.
RUNPOD_WORKER_URLS = ("RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_WEBHOOK_PING")


def load_handler(ref: str):
    module, _, name = ref.partition(":")
    if not module or not name:
        raise ValueError(f"handler must look like 'module:function' (got {ref!r})")
    return getattr(importlib.import_module(module), name)


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(70)  # the endpoint is gone: never leave an orphaned training running
        time.sleep(1.0)


def _prepare_environment(env: dict[str, str]) -> None:
    for name in (*CONTROLLER_SECRETS, *RUNPOD_WORKER_URLS):
        os.environ.pop(name, None)
    for name, value in env.items():
        os.environ.setdefault(name, value)
    # runpod-python logs every streamed chunk at its default level (DEBUG).
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")


def run_with_runpod_loop(handler, job: dict[str, Any], conn) -> None:
    """Run `job` through runpod-python's worker loop; results go to `conn` (module doc)."""
    import logging

    from runpod.serverless.modules import rp_job, rp_scale

    from trainer.handler import QUIET_LOGGERS

    # Importing runpod turns on INFO logging for everything (its rp_upload calls
    # basicConfig), as in the image; there the handler's entry then quiets the HTTP
    # clients, whose INFO lines carry signed URLs. The same here.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    async def stream_result(session, job_data, job):  # noqa: ARG001 - rp_http's signature
        conn.send(("stream", json.dumps(job_data, ensure_ascii=False)))

    async def send_result(session, job_data, job, is_stream=False):  # noqa: ARG001
        conn.send(("done", json.dumps(job_data, ensure_ascii=False)))

    rp_job.stream_result, rp_job.send_result = stream_result, send_result
    pending = [job]

    async def take_job(session, num_jobs=1):  # noqa: ARG001 - rp_job.get_job's signature
        if pending:
            return [pending.pop()]
        await asyncio.sleep(0.2)
        return None

    async def no_stop_signals(session):  # noqa: ARG001 - cancel kills the process group
        await asyncio.sleep(0.2)
        return []

    rp_scale.JobScaler(
        {
            "handler": handler,
            "return_aggregate_stream": True,
            "refresh_worker": True,
            "jobs_fetcher": take_job,
            "stop_signals_fetcher": no_stop_signals,
            "rp_args": {},
        }
    ).start()


def worker_main(
    handler_ref: str, job: dict[str, Any], conn, env: dict[str, str], parent_pid: int
) -> None:
    """Run one job in this process and report through `conn` (see module doc)."""
    os.setsid()
    _prepare_environment(env)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    try:
        handler = load_handler(handler_ref)
        conn.send(("ready", None))
        run_with_runpod_loop(handler, job, conn)
    except BaseException as e:  # noqa: BLE001 - reported to the endpoint as the job's error
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()
