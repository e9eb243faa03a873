"""One local worker process: what a RunPod Serverless worker does for one job.

`worker_main` runs in a fresh process per job (started by `local.endpoint`). It becomes
the leader of its own process group (so the endpoint can kill everything the handler
started), drops the controller's secrets from its environment (a RunPod worker never
holds them; `HF_TOKEN` stays, as the worker's own), imports the handler, reports
`("ready", None)`, then reports each yielded chunk as `("chunk", value)` and ends with
`("done", None)`, `("result", value)` for a plain handler, or `("error", message)`. A
chunk or result that is a dict with a truthy `error` key ends the job as an error, as in
the RunPod SDK. If the endpoint process dies, the worker exits within a second.
"""

from __future__ import annotations

import importlib
import inspect
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


def load_handler(ref: str):
    module, _, name = ref.partition(":")
    if not module or not name:
        raise ValueError(f"handler must look like 'module:function' (got {ref!r})")
    return getattr(importlib.import_module(module), name)


def _is_error(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("error"))


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(70)  # the endpoint is gone: never leave an orphaned training running
        time.sleep(1.0)


def worker_main(
    handler_ref: str, job: dict[str, Any], conn, env: dict[str, str], parent_pid: int
) -> None:
    """Run one job in this process and report through `conn` (see module doc)."""
    os.setsid()
    for name in CONTROLLER_SECRETS:
        os.environ.pop(name, None)
    for name, value in env.items():
        os.environ.setdefault(name, value)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    try:
        handler = load_handler(handler_ref)
        conn.send(("ready", None))
        result = handler(job)
        if inspect.isgenerator(result):
            for chunk in result:
                if _is_error(chunk):
                    conn.send(("error", str(chunk["error"])))
                    return
                conn.send(("chunk", chunk))
            conn.send(("done", None))
        elif _is_error(result):
            conn.send(("error", str(result["error"])))
        else:
            conn.send(("result", result))
    except BaseException as e:  # noqa: BLE001 - reported to the endpoint as the job's error
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()
