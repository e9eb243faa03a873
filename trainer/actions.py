"""One job of any action: the payload validated (here, once), then its lifecycle.

`run_job(payload, env)` yields a job's events. The payload (a `JobSpec` or its JSON) is
validated first; an invalid one (a missing or unknown action included) ends as a single
`failed` event of kind `bad_input` numbered 0, and `events.jsonl`/`result.json` still go
to the payload's upload URLs when those are well-formed. A valid spec runs its action:

- `train`: `trainer.train.run_training` (setup -> train -> save -> deliver -> cleanup);
  with `gpus` > 1, `trainer.multi.run_multi` (the same lifecycle in one process per GPU
  under torchrun, the same events).
- `merge` (`trainer.merge`), `gguf` (`trainer.gguf_action`: the merge written as GGUF) and
  `cache_model` (`trainer.cache_action`) follow one small lifecycle:

      the action's setup -> `started` -> work (`gguf`: `progress` events) -> `completed` | `failed`

  The `started` event carries `cold_start_s`: seconds from the handler taking the job
  until the action was ready to work (for `cache_model`: until it knew whether the model
  is cached; for `merge` and `gguf`: base model and adapter loaded). The final event is exactly one
  `completed` (with the action's result) or `failed` (kind, message, suggestion, decided
  by exception type as in training). `events.jsonl` and `result.json` are uploaded to
  `output.upload_urls` when given, also after a failure.

An action is a generator function `(spec, env, log, t0) -> Generator[Event, None, dict]`: it
emits its events through `log` (an `EventLog`), yields them, and returns the data of the
`completed` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from trainer.cache_action import cache_model
from trainer.env import WorkerEnv
from trainer.gguf_action import gguf
from trainer.merge import merge
from trainer.multi import run_multi
from trainer.output import EventLog
from trainer.report import failure_data, upload_event_log
from trainer.shared.spec import Event, JobSpec
from trainer.train import run_training

Action = Callable[[JobSpec, WorkerEnv, EventLog, float], Generator[Event, None, dict[str, Any]]]
ACTIONS: dict[str, Action] = {"merge": merge, "gguf": gguf, "cache_model": cache_model}


def run_job(payload: JobSpec | Mapping[str, Any], env: WorkerEnv) -> Iterator[Event]:
    """One job of any action; yields its events (see the module docstring)."""
    t0 = time.monotonic()
    try:
        spec = payload if isinstance(payload, JobSpec) else JobSpec.model_validate(payload)
    except ValidationError as exc:
        yield rejected(payload, exc)
        return
    if spec.action == "train" and spec.gpus > 1:
        yield from run_multi(spec, env, t0)
    elif spec.action == "train":
        yield from run_training(spec, env, t0)
    else:
        yield from run_action(ACTIONS[spec.action], spec, env, t0)


def rejected(payload: Any, exc: ValidationError) -> Event:
    """The one `failed` event of an invalid payload, its log uploaded where it asks."""
    elog = EventLog()
    final = elog.emit("failed", failure_data(exc))
    job_id = payload.get("job_id") if isinstance(payload, Mapping) else None
    upload_event_log(
        elog, final, job_id if isinstance(job_id, str) else None, _raw_upload_urls(payload)
    )
    return final


def _raw_upload_urls(payload: Any) -> dict[str, str]:
    """Upload URLs from a payload that failed validation, when they are well-formed."""
    try:
        urls = payload["output"]["upload_urls"]
    except (KeyError, TypeError):
        return {}
    if not isinstance(urls, Mapping):
        return {}
    return {k: v for k, v in urls.items() if isinstance(k, str) and isinstance(v, str)}


def run_action(action: Action, spec: JobSpec, env: WorkerEnv, t0: float) -> Iterator[Event]:
    """The small lifecycle of `merge`, `gguf` and `cache_model` (see the module docstring)."""
    elog = EventLog(start_seq=spec.first_seq)
    try:
        data = yield from action(spec, env, elog, t0)
        final = elog.emit("completed", data)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the failed event (report.failure_data logs it)
        final = elog.emit("failed", failure_data(exc, spec))
    upload_event_log(elog, final, spec.job_id, spec.output.upload_urls if spec.output else {})
    yield final
