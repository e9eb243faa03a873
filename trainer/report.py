"""What every job reports, whatever its action: the spec as shown, `started` data, the
`failed` event's data, and the event log uploaded at the end.

- `public_config(spec)` is the one redactor of signed URLs: upload URLs and a merge's
  adapter URLs become "<signed url>"; dataset URLs and a `resume_from` URL keep their path
  and lose their query string (the signature). Everything a job reports or stores goes
  through it (`started` events, `brightrun.json`).
- `started_data(spec, env, t0, **extra)`: job id, action (for actions other than
  `train`), spec version, redacted config, worker environment, `extra`, then the cold
  start (seconds since `t0`) and the process uptime.
- `failure_data(exc, spec)`: `kind`, `message`, `suggestion` of a failure, decided by
  the exception's type (`trainer.shared.errors.describe_failure`); logged here, with a
  traceback for an `internal` failure only.
- `upload_event_log(elog, final, job_id, urls)`: `events.jsonl` and `result.json` to the
  URLs named so, also after a failure; a failed upload is logged, never raised.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.env import WorkerEnv
from trainer.output import EventLog, safe_upload_log
from trainer.shared.errors import describe_failure
from trainer.shared.files import LOG_FILES
from trainer.shared.spec import SPEC_VERSION, Event, JobSpec

log = logging.getLogger("brightrun.trainer")

_PROCESS_START = time.monotonic()
SIGNED = "<signed url>"


def _strip_signature(url: str | None) -> str | None:
    if not url:
        return url
    base, sep, _query = url.partition("?")
    return base + ("?<signature>" if sep else "")


def public_config(spec: JobSpec) -> dict[str, Any]:
    """The spec as reported: every signed URL redacted (they grant access)."""
    cfg = spec.model_dump(mode="json")
    if cfg.get("output"):
        cfg["output"]["upload_urls"] = {k: SIGNED for k in cfg["output"]["upload_urls"]}
    if cfg.get("merge"):
        cfg["merge"]["adapter_urls"] = {k: SIGNED for k in cfg["merge"]["adapter_urls"]}
    if cfg.get("data"):
        for key in ("train_url", "eval_url"):
            cfg["data"][key] = _strip_signature(cfg["data"][key])
    if spec.resume_from and "://" in spec.resume_from:
        cfg["resume_from"] = _strip_signature(spec.resume_from)
    return cfg


def started_data(spec: JobSpec, env: WorkerEnv, t0: float, **extra: Any) -> dict[str, Any]:
    """The `started` event's data (cold start measured now)."""
    head: dict[str, Any] = {"job_id": spec.job_id}
    if spec.action != "train":
        head["action"] = spec.action
    return {
        **head,
        "spec_version": SPEC_VERSION,
        "config": public_config(spec),
        "worker": env.public_view(),
        **extra,
        "cold_start_s": round(time.monotonic() - t0, 3),
        "process_uptime_s": round(time.monotonic() - _PROCESS_START, 3),
    }


def training_started(
    spec: JobSpec, env: WorkerEnv, t0: float, run: Any, resumed_from: Any
) -> dict[str, Any]:
    """The `started` event's data of a training run once it is set up: the model's facts,
    the dataset, the batch plan and the step it resumed from."""
    return started_data(
        spec,
        env,
        t0,
        model=run.model_facts,
        dataset=run.dataset,
        plan=run.batches.summary(),
        resumed_from_step=resumed_from,
    )


def failure_data(exc: BaseException, spec: JobSpec | None = None) -> dict[str, Any]:
    """The `failed` event's data for `exc`, logged (see the module docstring)."""
    kind, message, suggestion = describe_failure(exc, spec)
    if spec is not None:
        if kind == "internal":
            log.exception("%s job %s failed", spec.action, spec.job_id)
        else:
            log.warning("%s job %s failed (%s): %s", spec.action, spec.job_id, kind, message)
    return {"kind": kind, "message": message, "suggestion": suggestion}


def upload_event_log(
    elog: EventLog, final: Event, job_id: str | None, urls: Mapping[str, str]
) -> None:
    """Upload `events.jsonl` and `result.json` to the URLs named so (none: nothing to do)."""
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
        files = {
            "events.jsonl": elog.write_all(work / "events.jsonl"),
            "result.json": work / "result.json",
        }
        safe_upload_log(files, wanted)
    finally:
        shutil.rmtree(work, ignore_errors=True)
