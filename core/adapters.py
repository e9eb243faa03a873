"""Adapters as products: numbered versions, checkpoints, lineage, continued training.

Built on `core.db.repo` (the `adapters` and `adapter_versions` tables); every function takes
the acting user and sees only their adapters (another user's version is `NotFound`).

- Numbering: a completed job's adapter becomes the next version of the adapter named in
  the job (`support-bot` v1, v2, ...), registered by `core.jobs.sync`
  (`register_job_version`; its id is `version_id_for(job id)`). Numbers are never
  reused: a deleted version keeps its number.
- Checkpoints: a `checkpoint` event whose data names an `adapter_path` (a PEFT folder the
  worker wrote on the shared volume, `ADAPTER_DIR/.checkpoints/<job>/step-N`) is registered
  as a checkpoint of the job's adapter while the job runs (`register_checkpoints`, called
  by `sync`): no number, its step, the job's settings. The playground serves it as
  `ckpt-<version id>` (`core.clients.inference.model_choices`). `promote` gives it the next number;
  when its folder is visible from here (the local stack) its files are also copied to
  storage, so it exports like any version.
- Continued training: `core.jobs.continue_training` launches a job whose spec starts from the
  version's adapter weights (`JobSpec.resume_from`: a signed URL of the stored weights,
  else the folder on the volume, decided at each send by `parent_source`), on the same
  base model with the same LoRA shape (other values are refused: the weights would not
  fit); the version is recorded as the job's `resume_from_version_id` and as the parent of
  every version and checkpoint that job registers. `continued_lora` keeps its LoRA shape.
- References: `resolve(actor, session, ref)` accepts a version id (`av-...`), an adapter
  name (its newest version), `name:v2`, `name@2` or `name v2`.

Errors: `core.errors` types -- `NotFound`, `InvalidInput` (a bad reference, settings that
do not fit the parent), `Conflict`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.clients.storage import DOWNLOAD_URL_TTL_S, BlobStore, adapter_key, adapter_prefix
from core.db import repo, session_scope
from core.db.tables import Adapter, AdapterVersion, Job
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from core.users import Actor
from trainer.shared.methods import Method

__all__ = [
    "VersionInfo",
    "resolve",
    "label",
    "info",
    "list_versions",
    "lineage",
    "register_checkpoints",
    "promote",
    "delete_version",
    "continued_lora",
    "version_id_for",
    "register_job_version",
    "delete_adapter",
    "adapter_name_of",
    "parent_source",
    "PEFT_FILES",
]

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
_REF = re.compile(r"^(?P<name>.+?)(?:(?::v|@|\s+v)(?P<num>\d+))$")


@dataclass(frozen=True)
class VersionInfo:
    """One version or checkpoint, as the command line and pages show it."""

    id: str
    adapter: str
    label: str  # "support-bot v2", "support-bot step 400", "support-bot v3 step 400"
    version: int | None
    is_checkpoint: bool
    step: int | None
    base_model: str
    job_id: str | None
    dataset_id: str | None
    parent_id: str | None
    parent_label: str | None
    method: str  # sft | dpo | orpo: how the version was trained
    final_loss: float | None
    eval_loss: float | None
    size_bytes: int | None
    stored: bool  # files in storage (zip, hub push, continued training by URL)
    on_volume: bool  # a folder the inference server can load
    status: str
    eval_status: str | None
    hub_repo: str | None
    created_at: Any

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        return d


def label(adapter_name: str, v: AdapterVersion) -> str:
    text = f"{adapter_name} v{v.version}" if v.version is not None else adapter_name
    return text + (f" step {v.step}" if v.is_checkpoint else "")


def adapter_name_of(session: Session, v: AdapterVersion) -> str:
    a = session.get(Adapter, v.adapter_id)
    return a.name if a is not None else v.adapter_id


def info(actor: Actor, session: Session, v: AdapterVersion) -> VersionInfo:
    name = adapter_name_of(session, v)
    parent = None
    if v.parent_version_id:
        parent = session.get(AdapterVersion, v.parent_version_id)
        if parent is not None and parent.owner_id != actor.user_id:
            parent = None
    return VersionInfo(
        id=v.id,
        adapter=name,
        label=label(name, v),
        version=v.version,
        is_checkpoint=v.is_checkpoint,
        step=v.step,
        base_model=v.base_model,
        job_id=v.job_id,
        dataset_id=v.dataset_id,
        parent_id=v.parent_version_id,
        parent_label=label(adapter_name_of(session, parent), parent)
        if parent is not None
        else None,
        method=(v.settings or {}).get("method") or Method.SFT,
        final_loss=v.final_loss,
        eval_loss=v.eval_loss,
        size_bytes=v.size_bytes,
        stored=bool(v.storage_prefix),
        on_volume=bool(v.volume_path),
        status=v.status,
        eval_status=(v.eval_scores or {}).get("status"),
        hub_repo=v.hub_repo,
        created_at=v.created_at,
    )


def resolve(actor: Actor, session: Session, ref: str) -> AdapterVersion:
    """The actor's version named by `ref` (see the module docstring)."""
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("name an adapter version: a version id, NAME, NAME:v2 or NAME@2")
    if ref.startswith("av-"):
        return repo.get_version(actor, session, ref)
    m = _REF.match(ref)
    if m:
        return repo.get_version_by_number(actor, session, m["name"], int(m["num"]))
    return repo.latest_version(actor, session, ref)


def list_versions(
    actor: Actor, session: Session, adapter: str | None = None, include_checkpoints: bool = True
) -> list[VersionInfo]:
    """The actor's versions (of one adapter, or all), oldest first per adapter."""
    out = []
    adapters = (
        [repo.get_adapter(actor, session, adapter)]
        if adapter
        else repo.list_adapters(actor, session)
    )
    for a in adapters:
        for v in repo.list_versions(actor, session, a.id, include_checkpoints=include_checkpoints):
            out.append(info(actor, session, v))
    return out


def lineage(actor: Actor, session: Session, ref: str) -> list[VersionInfo]:
    """The version and its ancestors (parent, grandparent, ...), newest first."""
    v = resolve(actor, session, ref)
    return [info(actor, session, x) for x in repo.version_lineage(actor, session, v.id)]


# --------------------------------------------------------------------------- checkpoints


def _job_settings(job: Job) -> dict[str, Any]:
    spec = job.spec or {}
    return {
        "lora": spec.get("lora"),
        "training": spec.get("training"),
        "quantization": spec.get("quantization"),
        "method": spec.get("method", Method.SFT),
        "preference": spec.get("preference"),
    }


def _from_job(job: Job) -> dict[str, Any]:
    """What a version (or checkpoint) takes from the job that made it: its adapter, base,
    dataset, parent version and settings."""
    return {
        "adapter_name": job.adapter_name,
        "base_model": job.base_model,
        "job_id": job.id,
        "dataset_id": job.dataset_id,
        "parent_version_id": job.resume_from_version_id,
        "settings": _job_settings(job),
    }


def register_checkpoints(
    actor: Actor, session: Session, job: Job, events: Iterable[Any]
) -> list[AdapterVersion]:
    """Register the checkpoints among `events` that carry a PEFT `adapter_path`
    (idempotent per job and step). Returns the versions registered or found."""
    found = [
        (e.data["step"], str(e.data["adapter_path"]))
        for e in events
        if getattr(e, "type", None) == "checkpoint"
        and isinstance((e.data or {}).get("step"), int)
        and (e.data or {}).get("adapter_path")
    ]
    if not found or not job.adapter_name:
        return []
    losses = [
        (m.data["step"], m.data["loss"])
        for m in repo.list_events(actor, session, job.id, types=["metrics"])
        if isinstance((m.data or {}).get("step"), int)
        and isinstance(m.data.get("loss"), int | float)
    ]
    out = []
    for step, path in dict(found).items():
        curve = [[s, loss] for s, loss in losses if s <= step]
        out.append(
            repo.create_adapter_version(
                actor,
                session,
                **_from_job(job),
                final_loss=curve[-1][1] if curve else None,
                loss_curve=curve,
                volume_path=path,
                is_checkpoint=True,
                step=step,
            )
        )
    return out


def version_id_for(job_id: str) -> str:
    """The adapter version a job produces gets an id derived from the job's (one per job)."""
    return "av-" + job_id.removeprefix("job-")


def register_job_version(
    actor: Actor, session: Session, job: Job, final: Any, store: BlobStore
) -> AdapterVersion | None:
    """Register the adapter a completed training job uploaded as the next version of its
    adapter (idempotent per job). None when its PEFT files are not in storage. `final` is
    the job's `completed` event (its summary's losses win over the job's)."""
    vid = version_id_for(job.id)
    prefix = adapter_prefix(actor.user_id, vid)
    files = {b.key.rsplit("/", 1)[-1]: b.size for b in store.list("adapters", prefix)}
    if not set(PEFT_FILES) <= set(files):
        return None
    data = (final.data or {}) if final is not None else {}
    summary = data.get("summary") or {}
    metrics = repo.list_events(actor, session, job.id, types=["metrics"])
    curve = [
        [m.data["step"], m.data["loss"]]
        for m in metrics
        if "step" in (m.data or {}) and "loss" in (m.data or {})
    ]
    return repo.create_adapter_version(
        actor,
        session,
        **_from_job(job),
        final_loss=summary.get("final_loss", job.final_loss),
        eval_loss=summary.get("eval_loss", job.eval_loss),
        loss_curve=curve,
        size_bytes=sum(files.values()),
        storage_prefix=prefix,
        volume_path=(data.get("adapter") or {}).get("adapter_dir"),
        version_id=vid,
    )


def _store_folder(actor: Actor, store: BlobStore, version_id: str, folder: Path) -> tuple[str, int]:
    """Copy a PEFT folder's files into the version's storage folder; (prefix, bytes)."""
    size = 0
    for name in PEFT_FILES:
        path = folder / name
        ctype = "application/json" if name.endswith(".json") else "application/octet-stream"
        size += store.put_file(
            "adapters", adapter_key(actor.user_id, version_id, name), path, ctype
        )
    return adapter_prefix(actor.user_id, version_id), size


def promote(actor: Actor, session: Session, store: BlobStore | None, ref: str) -> AdapterVersion:
    """Give a checkpoint the next version number of its adapter (idempotent). When its
    folder is visible from here its files are copied to storage too."""
    v = resolve(actor, session, ref)
    if not v.is_checkpoint and v.version is not None:
        return v
    v = repo.promote_checkpoint(actor, session, v.id)
    folder = Path(v.volume_path) if v.volume_path else None
    if (
        store is not None
        and not v.storage_prefix
        and folder is not None
        and all((folder / f).is_file() for f in PEFT_FILES)
    ):
        prefix, size = _store_folder(actor, store, v.id, folder)
        v = repo.update_version(actor, session, v.id, storage_prefix=prefix, size_bytes=size)
    return v


def delete_version(
    actor: Actor, session: Session, store: BlobStore | None, ref: str
) -> AdapterVersion:
    """Soft-delete one version (its number is not reused) and remove its stored files."""
    v = resolve(actor, session, ref)
    v = repo.delete_version(actor, session, v.id)
    if store is not None and v.storage_prefix:
        store.delete_prefix(v.storage_bucket, v.storage_prefix)
    return v


def delete_adapter(actor: Actor, session: Session, store: Any, name_or_id: str) -> int:
    """Soft-delete the adapter and its versions and remove their stored files. Returns how
    many files were removed. The rows stay for the lineage of jobs."""
    versions = repo.list_versions(actor, session, name_or_id)
    repo.delete_adapter(actor, session, name_or_id)
    removed = 0
    for v in versions:
        if v.storage_prefix:
            removed += store.delete_prefix(v.storage_bucket, v.storage_prefix)
    return removed


# --------------------------------------------------------------------------- continued training


def continued_lora(
    parent: Mapping[str, Any] | None, given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The LoRA settings of a job continuing a version: the parent's with `given` over
    them; a different shape (rank, targets, DoRA, experts) is `InvalidInput`, because the
    parent's weights would not fit."""
    parent_lora = dict(parent or {})
    new_lora = {**parent_lora, **dict(given or {})}
    for key in ("r", "target_modules", "use_dora", "lora_on_experts"):
        if key in parent_lora and new_lora.get(key) != parent_lora.get(key):
            raise InvalidInput(
                f"lora.{key} {new_lora.get(key)!r} differs from the parent's {parent_lora.get(key)!r}: "
                "continued training loads the parent's weights, so the LoRA shape must stay the same"
            )
    return new_lora


def parent_source(actor: Actor, settings: Settings, job_id: str, store: BlobStore) -> str:
    """Where the worker fetches the parent adapter of a continued-training job: a fresh
    signed URL of its stored weights, else its folder on the shared volume."""
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if not job.resume_from_version_id:
            raise InvalidInput(f"job {job_id} does not continue a version")
        v = s.get(AdapterVersion, job.resume_from_version_id)
        if v is None or v.owner_id != actor.user_id:
            raise NotFound(f"the parent version of job {job_id} is gone")
        prefix, folder = v.storage_prefix, v.volume_path
    if prefix:
        key = prefix + "adapter_model.safetensors"
        if store.exists("adapters", key):
            return store.signed_download_url("adapters", key, DOWNLOAD_URL_TTL_S)
    if folder:
        return folder
    raise NotFound(
        f"the parent version of job {job_id} has no stored weights and no folder on the volume"
    )
