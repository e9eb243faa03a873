"""Small handlers for endpoint contract tests, driven by the job input.

`scripted` is a generator handler, like the trainer's: it yields `chunks` event-shaped dicts
`interval_s` apart, then optionally sleeps `hang_s`, yields one last event `final` (a
`failed` one followed by the job's error, as `trainer.handler` does), raises `raise`, or
yields an `{"error": ...}` chunk (`yield_error`). `plain` returns `{"echo": input}` or
raises `plain_raise`.
"""

from __future__ import annotations

import time

from trainer.handler import with_platform_error


def scripted(job):
    inp = job["input"]
    for i in range(int(inp.get("chunks", 3))):
        if i:
            time.sleep(float(inp.get("interval_s", 0.05)))
        yield {"seq": i, "type": "metrics", "data": {"step": i, "job": job["id"]}}
    if inp.get("hang_s"):
        time.sleep(float(inp["hang_s"]))
    if inp.get("final"):  # one last event, ended as trainer.handler ends it
        n = int(inp.get("chunks", 3))
        yield from with_platform_error([{"seq": n, "ts": time.time(), **inp["final"]}])
    if inp.get("yield_error"):
        yield {"error": inp["yield_error"]}
    if inp.get("raise"):
        raise RuntimeError(inp["raise"])


def plain(job):
    if job["input"].get("plain_raise"):
        raise RuntimeError(job["input"]["plain_raise"])
    return {"echo": job["input"]}


def stuck_trainer(job):
    """A worker that starts like the trainer, then hangs (a deadlock, a dead data loader): the
    only kind of job the platform's executionTimeout has to stop, because a working trainer
    stops itself at its time limit first."""
    yield {
        "seq": 0,
        "type": "started",
        "ts": time.time(),
        "data": {
            "job_id": job["input"].get("job_id"),
            "cold_start_s": 0.5,
            "process_uptime_s": 1.0,
        },
    }
    time.sleep(3600)
