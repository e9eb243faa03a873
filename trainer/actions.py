"""The worker's actions: dispatch by `JobSpec.action`, and the lifecycle of the short ones.

`run(payload, env)` yields a job's events exactly as `trainer.actions.run_job` does. A `train`
job -- and a payload whose action is missing or unknown, so that the training lifecycle
reports the validation error -- goes to `run_training`. `merge` (`trainer.merge`) and
`cache_model` (`trainer.cache`) follow one small lifecycle:

    validate (fail fast) -> the action's setup -> `started` -> work -> `completed` | `failed`

The `started` event carries `cold_start_s`: seconds from the handler taking the job until
the action was ready to work (for `cache_model`: until it knew whether the model is
cached; for `merge`: base model and adapter loaded). The final event is always exactly one
`completed` (with the action's result) or `failed` (kind, message, suggestion, decided by
exception type as in training). `events.jsonl` and `result.json` are uploaded to
`output.upload_urls` when given, also after a failure.

An action is a generator function `(spec, env, log, t0) -> Generator[Event, None, dict]`: it
emits its events through `log` (an `EventLog`), yields them, and returns the data of the
`completed` event.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

from trainer.env import WorkerEnv
from trainer.output import EventLog, safe_upload_log
from trainer.shared.errors import describe_failure
from trainer.shared.files import LOG_FILES
from trainer.shared.spec import SPEC_VERSION, Event, JobSpec

log = logging.getLogger("brightrun.trainer")

_PROCESS_START = time.monotonic()

Action = Callable[[JobSpec, WorkerEnv, EventLog, float], Generator[Event, None, dict[str, Any]]]


def _actions() -> dict[str, Action]:
    from trainer.cache import cache_model
    from trainer.merge import merge

    return {"merge": merge, "cache_model": cache_model}


def _action_of(payload: Any) -> Any:
    if isinstance(payload, JobSpec):
        return payload.action
    return payload.get("action", "train") if isinstance(payload, Mapping) else "train"


def public_config(spec: JobSpec) -> dict[str, Any]:
    """The spec as reported in events: every signed URL replaced by a marker."""
    cfg = spec.model_dump(mode="json")
    if cfg.get("output"):
        cfg["output"]["upload_urls"] = {k: "<signed url>" for k in cfg["output"]["upload_urls"]}
    if cfg.get("merge"):
        cfg["merge"]["adapter_urls"] = {k: "<signed url>" for k in cfg["merge"]["adapter_urls"]}
    return cfg


def started_data(spec: JobSpec, env: WorkerEnv, t0: float, **extra: Any) -> dict[str, Any]:
    """The `started` event's data for an action (cold start measured now)."""
    return {
        "job_id": spec.job_id,
        "action": spec.action,
        "spec_version": SPEC_VERSION,
        "config": public_config(spec),
        "worker": env.public_view(),
        **extra,
        "cold_start_s": round(time.monotonic() - t0, 3),
        "process_uptime_s": round(time.monotonic() - _PROCESS_START, 3),
    }


def _upload_log(elog: EventLog, final: Event, job_id: str | None, urls: Mapping[str, str]) -> None:
    wanted = {k: v for k, v in urls.items() if k in LOG_FILES}
    if not wanted:
        return
    work = Path(tempfile.mkdtemp(prefix="brightrun-log-"))
    try:
        result = {
            "job_id": job_id,
            "status": "COMPLETED" if final.type == "completed" else "FAILED",
            "final": final.model_dump(mode="json"),
        }
        (work / "result.json").write_text(json.dumps(result))
        files = {"events.jsonl": elog.write_all(work / "events.jsonl"), "result.json": work / "result.json"}
        safe_upload_log(files, wanted)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_job(payload: JobSpec | Mapping[str, Any], env: WorkerEnv) -> Iterator[Event]:
    """One job of any action; yields its events (see the module docstring)."""
    from pydantic import ValidationError

    from trainer.train import run_training

    t0 = time.monotonic()
    action = _action_of(payload)
    if action not in _actions():
        yield from run_training(payload, env)
        return
    try:
        spec = payload if isinstance(payload, JobSpec) else JobSpec.model_validate(payload)
    except ValidationError as exc:
        kind, message, suggestion = describe_failure(exc)
        elog = EventLog()
        final = elog.emit("failed", {"kind": kind, "message": message, "suggestion": suggestion})
        urls = (payload.get("output") or {}).get("upload_urls") if isinstance(payload, Mapping) else None
        job_id = payload.get("job_id") if isinstance(payload, Mapping) else None
        if isinstance(urls, Mapping):
            _upload_log(elog, final, job_id if isinstance(job_id, str) else None, {
                k: v for k, v in urls.items() if isinstance(k, str) and isinstance(v, str)
            })  # fmt: skip
        yield final
        return
    elog = EventLog(start_seq=spec.first_seq)
    try:
        data = yield from _actions()[spec.action](spec, env, elog, t0)
        final = elog.emit("completed", data)
    except Exception as exc:
        kind, message, suggestion = describe_failure(exc, spec)
        if kind == "internal":
            log.exception("%s job %s failed", spec.action, spec.job_id)
        else:
            log.warning("%s job %s failed (%s): %s", spec.action, spec.job_id, kind, message)
        final = elog.emit("failed", {"kind": kind, "message": message, "suggestion": suggestion})
    _upload_log(elog, final, spec.job_id, spec.output.upload_urls if spec.output else {})
    yield final
