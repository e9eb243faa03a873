"""A `gguf` job: a version's merged GGUF written on the GPU endpoint (`trainer.gguf_action`),
for base models above the controller's own limit (`Settings.gguf_local_max_params`).

`launch_gguf(actor, settings, ref, variant, stem, ...)` -> (job, version) sends the job: the
worker loads the base from its volume's model cache (or the hub, as training does) and the
adapter by signed URLs (or its folder on the volume), merges, writes and quantises, and
PUTs the GGUF and its Modelfile to upload URLs signed for `<owner>/jobs/<job id>/gguf/`
(the names are `trainer.shared.files.gguf_names`, known before the job runs). The merge
runs in float32 when the planner says the base fits the job's GPU in float32 (the file then
equals the controller's export), else in bfloat16 (the adapter's change rounded to
bfloat16, as the `merge` job's default); refused (`PlanRefused`) when not even bfloat16
fits. Quotas, budget and time limit are a `merge` job's (`core.actions.send_action`).

`gguf_job_status(actor, settings, job_id)` -> `GgufJobStatus`: brings the job up to date
(`core.jobs.sync`) and says where it is: the stage in words and the share done (the job's
`progress`, which the sync takes from its `progress` events), and once it completed the stored files, each with its size and a
signed download link (`DOWNLOAD_URL_TTL_S`); a failed job's reason. `InvalidInput` for a
job that is not a `gguf` job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core import jobs
from core.clients.storage import DOWNLOAD_URL_TTL_S, job_prefix, make_blob_store
from core.db import repo, session_scope
from core.db.tables import TERMINAL_STATUSES, JobStatus
from core.errors import InvalidInput
from core.export.merge import (
    VersionSource,
    action_spec,
    checked_plan,
    send_export,
    version_source,
)
from core.settings import Settings
from core.users import Actor
from trainer.shared.files import gguf_names

STAGES = {
    "merge": "merging the adapter into the base model",
    "write": "writing the GGUF",
    "quantize": "quantising with llama.cpp",
    "upload": "uploading",
}


@dataclass(frozen=True)
class GgufFile:
    name: str
    key: str
    size: int
    url: str  # a signed download link


@dataclass(frozen=True)
class GgufJobStatus:
    job_id: str
    status: str  # the job's JobStatus
    done: bool  # the job ended (completed, failed or cancelled)
    stage: str  # where it is, in words
    fraction: float  # of the whole export, 0..1
    files: list[GgufFile]  # once completed
    failure: str | None = None


def max_file_bytes(settings: Settings) -> int:
    """The largest file a `gguf` job uploads in one piece (`GGUF_MAX_FILE_MB`)."""
    return int(settings.gguf_max_file_mb * 2**20)


def gguf_prefix(owner_id: str, job_id: str) -> str:
    return job_prefix(owner_id, job_id) + "gguf/"


def stored_file(store: Any, key: str, size: int) -> GgufFile:
    url = store.signed_download_url("adapters", key, DOWNLOAD_URL_TTL_S)
    return GgufFile(key.rsplit("/", 1)[-1], key, size, url)


def _merge_dtype(settings: Settings, src: VersionSource, pricing: jobs.Pricing) -> str:
    """float32 when the base fits the job's GPU in float32, else bfloat16 (see the module
    docstring); `PlanRefused` when neither fits."""
    try:
        checked_plan(settings, src, pricing, "float32", True)
        return "float32"
    except jobs.PlanRefused:
        checked_plan(settings, src, pricing, "bfloat16", True)
        return "bfloat16"


def launch_gguf(
    actor: Actor,
    settings: Settings,
    ref: str,
    variant: str,
    stem: str,
    *,
    shards: int = 1,
    budget_usd: float | None = None,
    gpu_type: str | None = None,
    client: Any = None,
    store: Any = None,
) -> tuple[Any, VersionSource]:
    """Send a `gguf` job for version `ref` writing `<stem>-<variant>.gguf` (or its `shards`
    files of llama.cpp's split GGUF) and its Modelfile (see the module docstring)."""
    store = store or make_blob_store(settings)
    src = version_source(actor, settings, ref, store)
    pricing = jobs.pricing_for(settings, gpu_type)
    dtype = _merge_dtype(settings, src, pricing)
    job_id = repo.new_id("job")
    section = {
        "dtype": dtype,
        "variant": variant,
        "file_stem": stem,
        "shards": shards,
        "max_file_bytes": max_file_bytes(settings),
    }
    names = gguf_names(stem, variant, shards)
    spec = action_spec(settings, src, pricing, job_id, "gguf", section, names)
    prefix = gguf_prefix(actor.user_id, job_id)
    return send_export(
        actor, settings, src, pricing, spec, prefix, names, budget_usd, client, store
    ), src


def _stage(status: str, progress: dict[str, Any] | None, started: bool) -> str:
    """Where the job is, in words, from its newest progress event."""
    if status == JobStatus.COMPLETED:
        return "done"
    if progress is None:
        return "loading the base model and adapter" if started else "waiting for a worker"
    words = STAGES.get(str(progress.get("stage")), str(progress.get("stage")))
    share = float(progress.get("fraction", 0.0))
    return f"{words} (step {progress.get('step')} of {progress.get('steps')}, {share:.0%})"


def gguf_job_status(
    actor: Actor, settings: Settings, job_id: str, *, client: Any = None, store: Any = None
) -> GgufJobStatus:
    """Where `gguf` job `job_id` is, and its files once it completed (see the module doc)."""
    store = store or make_blob_store(settings)
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if job.action != "gguf":
            raise InvalidInput(f"job {job_id} is a {job.action} job, not a GGUF export")
        ended = job.status in TERMINAL_STATUSES
    if not ended:
        job = jobs.sync(actor, settings, job_id, client=client, store=store)
    with session_scope(settings) as s:
        progress = repo.list_events(actor, s, job_id, types=["progress"])
        started = bool(repo.list_events(actor, s, job_id, types=["started"]))
    stage = _stage(job.status, progress[-1].data if progress else None, started)
    fraction = 1.0 if job.status == JobStatus.COMPLETED else float(job.progress or 0.0)
    files = []
    if job.status == JobStatus.COMPLETED:
        blobs = store.list("adapters", gguf_prefix(actor.user_id, job_id))
        files = [stored_file(store, b.key, b.size) for b in blobs]
    failure = None
    if job.status in TERMINAL_STATUSES and job.status != JobStatus.COMPLETED:
        failure = job.failure_message or f"the job ended {job.status}"
    return GgufJobStatus(
        job_id, job.status, job.status in TERMINAL_STATUSES, stage, fraction, files, failure
    )
