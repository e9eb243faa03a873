"""Sending a job to the endpoint: the one place a spec goes out, for every kind of job.

`dispatch(actor, settings, job_id, payload, limits, window)` sends a stored (QUEUED) job's
signed payload with `POST /run` (`policy.executionTimeout` from `limits`, `policy.ttl`
from `window`) and records the RunPod id and the endpoint it went to (a job keeps being
synced where it runs, even after GPU_CLUSTER_API_URL moves). If `/run` fails the job is
FAILED and `SubmitFailed` is raised; if its outcome is unknown (sent, no answer) the job
is FAILED with kind `submit_uncertain`, because sending it again could start it twice. A
job cancelled while `/run` was in flight is stopped as soon as it has an id. Training
(`core.jobs.launch`, `core.jobs.lifecycle`), merge and cache jobs (`core.actions`) all
send through here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core import planner
from core.adapters import version_id_for
from core.clients.runpod import RunPodClient, RunPodError, SubmitUncertain
from core.clients.storage import (
    DOWNLOAD_URL_TTL_S,
    BlobStore,
    adapter_key,
    job_key,
    make_blob_store,
)
from core.db import repo, session_scope
from core.db.tables import TERMINAL_STATUSES, Job, JobStatus, utcnow
from core.jobs.errors import SubmitFailed
from core.jobs.pricing import trainer_endpoint
from core.jobs.quotas import lock_row
from core.jobs.spec import ADAPTER_FILES, LOG_FILES
from core.jobs.window import UploadWindow
from core.settings import Settings
from core.users import Actor


@contextmanager
def job_client(
    settings: Settings, client: RunPodClient | None, url: str | None = None
) -> Iterator[RunPodClient]:
    """The client to use: the given one, or one for the configured endpoint; for the endpoint
    at `url` when a job runs on another one than configured now (RunPod API keys belong to
    the account, so the configured key serves it). Closes the clients it made."""
    made: list[RunPodClient] = []
    if client is None:
        client = RunPodClient.from_settings(settings)
        made.append(client)
    if url and url.rstrip("/") != client.base_url:
        client = RunPodClient(url, settings.gpu_cluster_api_key)
        made.append(client)
    try:
        yield client
    finally:
        for c in made:
            c.close()


def blob_store(settings: Settings, store: BlobStore | None) -> BlobStore:
    return store if store is not None else make_blob_store(settings)


def log_upload_urls(store: BlobStore, owner: str, job_id: str, ttl_s: int) -> dict[str, str]:
    """Upload URLs of the worker's `events.jsonl` and `result.json` in the job's folder."""
    return {
        name: store.signed_upload_url("adapters", job_key(owner, job_id, name), ttl_s)
        for name in LOG_FILES
    }


def sign_training(
    payload: dict[str, Any],
    store: BlobStore,
    owner: str,
    keys: tuple[str, str | None],
    upload_ttl: int,
) -> dict[str, Any]:
    """A training payload with fresh signed URLs: dataset (and eval split) downloads;
    uploads of the adapter files to the job's version folder and of the worker's logs,
    living `upload_ttl` seconds (`UploadWindow.url_s`)."""
    job_id = payload["job_id"]
    payload["data"]["train_url"] = store.signed_download_url(
        "datasets", keys[0], DOWNLOAD_URL_TTL_S
    )
    if keys[1]:
        payload["data"]["eval_url"] = store.signed_download_url(
            "datasets", keys[1], DOWNLOAD_URL_TTL_S
        )
    vid = version_id_for(job_id)
    urls = {
        name: store.signed_upload_url("adapters", adapter_key(owner, vid, name), upload_ttl)
        for name in ADAPTER_FILES
    }
    payload["output"]["upload_urls"] = {**urls, **log_upload_urls(store, owner, job_id, upload_ttl)}
    return payload


def fail_submit(
    actor: Actor, settings: Settings, job_id: str, kind: str, message: str, suggestion: str
) -> None:
    """Record that the job could not be sent (unless it already ended)."""
    with session_scope(settings) as s:
        lock_row(s, Job, job_id)
        if repo.get_job(actor, s, job_id).status not in TERMINAL_STATUSES:
            repo.update_job(
                actor,
                s,
                job_id,
                status=JobStatus.FAILED,
                finished_at=utcnow(),
                failure_kind=kind,
                failure_message=message,
                failure_suggestion=suggestion,
            )


def dispatch(
    actor: Actor,
    settings: Settings,
    job_id: str,
    payload: dict[str, Any],
    limits: planner.ExecutionLimits,
    window: UploadWindow,
    *,
    client: RunPodClient | None = None,
) -> Job:
    """POST /run with the signed `payload` of the stored job `job_id`; see the module
    docstring. Returns the job, IN_QUEUE."""
    with job_client(settings, client, trainer_endpoint(settings, payload.get("gpus") or 1)) as rp:
        try:
            sub = rp.run(
                payload, execution_timeout_ms=limits.execution_timeout_ms, ttl_ms=window.ttl_ms
            )
        except SubmitUncertain as e:
            fail_submit(
                actor,
                settings,
                job_id,
                "submit_uncertain",
                str(e),
                "look for the job on the endpoint (RunPod console, Requests) before launching "
                "again; if it is not there, retry it",
            )
            raise SubmitFailed(f"job {job_id}: {e}") from e
        except RunPodError as e:
            fail_submit(
                actor,
                settings,
                job_id,
                "submit_failed",
                str(e),
                "check GPU_CLUSTER_API_URL and GPU_CLUSTER_API_KEY and that the endpoint is up, "
                "then retry the job",
            )
            raise SubmitFailed(f"job {job_id} could not be sent: {e}") from e
        job, cancelled = _record_sent(
            actor, settings, job_id, sub.id, {"endpoint_url": rp.base_url, "ttl_ms": window.ttl_ms}
        )
        if cancelled:  # cancelled while /run was in flight: stop what was just started
            rp.cancel(sub.id)
    return job


def _record_sent(
    actor: Actor, settings: Settings, job_id: str, runpod_id: str, sent: dict[str, Any]
) -> tuple[Job, bool]:
    """Record the endpoint's id and, in `result`, where it went and its `policy.ttl`."""
    with session_scope(settings) as s:
        lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        status = JobStatus.IN_QUEUE if job.status not in TERMINAL_STATUSES else job.status
        result = {**(job.result or {}), **sent}
        job = repo.update_job(
            actor,
            s,
            job_id,
            status=status,
            runpod_job_id=runpod_id,
            submitted_at=utcnow(),
            result=result,
        )
        return job, job.cancel_requested_at is not None
