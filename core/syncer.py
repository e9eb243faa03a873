"""The background syncer: keeps every user's unfinished jobs in step with the endpoint.

Nothing depends on a dashboard being open: RunPod keeps a finished job's output for 30
minutes, so this loop (`brightrun sync`, started by `brightrun up`, or `python -m
core.syncer` as a service) syncs each unfinished job every `SYNC_INTERVAL_S` seconds,
backfilling from the worker's uploaded event log when the endpoint has forgotten a job,
and posts end-of-job notifications. The first pass on start is the reconcile after a
restart. Each pass also takes over the evaluations whose process is gone
(`core.eval_owner`), and every `RETENTION_EVERY_S` the checkpoint retention rule
(`core.retention`). Several syncers (and dashboards) may run at once: `core.jobs.sync` is
safe for that. One job's error is logged and retried on the next pass; it never stops the loop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from core import eval_owner, evaluate, jobs, retention
from core.clients.runpod import RunPodClient
from core.clients.storage import make_blob_store
from core.settings import Settings

log = logging.getLogger("brightrun.syncer")

RETENTION_EVERY_S = 600.0  # how often a syncer applies the checkpoint retention rule


def run(
    settings: Settings,
    *,
    interval_s: float | None = None,
    stop: threading.Event | None = None,
    passes: int | None = None,
    on_pass: Callable[[jobs.SyncReport], None] | None = None,
) -> int:
    """Sync until `stop` is set (or `passes` passes ran); returns the number of passes."""
    interval = settings.sync_interval_s if interval_s is None else interval_s
    stop = stop or threading.Event()
    client = RunPodClient.from_settings(settings)
    store = make_blob_store(settings)
    done = 0
    next_retention = time.monotonic()
    try:
        while not stop.is_set():
            try:
                report = jobs.reconcile(settings, client=client, store=store)
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable
                log.exception("sync pass failed; trying again in %.0f s", interval)
            else:
                if report.synced or report.errors:
                    log.info(
                        "synced %d job(s), %d ended, %d error(s)",
                        report.synced,
                        report.ended,
                        len(report.errors),
                    )
                if on_pass is not None:
                    on_pass(report)
            _adopt_evaluations(settings)
            if time.monotonic() >= next_retention:
                _apply_retention(settings)
                next_retention = time.monotonic() + RETENTION_EVERY_S
            done += 1
            if passes is not None and done >= passes:
                break
            stop.wait(interval)
    finally:
        client.close()
    return done


def _apply_retention(settings: Settings) -> None:
    """Drop the checkpoints the retention rule no longer keeps (`core.retention`)."""
    try:
        retention.apply(settings)
    except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable
        log.exception("checkpoint retention failed; trying again later")


def _adopt_evaluations(settings: Settings) -> None:
    """Run or settle the evaluations whose process is gone (`core.eval_owner`)."""
    try:
        adopted = eval_owner.adopt(settings, evaluate.run_in_background)
    except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable
        log.exception("taking over evaluations failed; trying again next pass")
        return
    if adopted.started or adopted.failed:
        log.info(
            "evaluations taken over: %d started, %d marked failed",
            len(adopted.started),
            len(adopted.failed),
        )


def main() -> None:
    from core.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs request URLs at INFO
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = load_settings()
    log.info("syncing unfinished jobs every %.1f s", settings.sync_interval_s)
    try:
        run(settings, stop=stop)
    except KeyboardInterrupt:
        log.info("stopped")


if __name__ == "__main__":
    main()
