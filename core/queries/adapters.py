"""The Adapters page: the actor's adapter versions as rows, and their export zip on demand.

`adapter_rows` lists ready versions newest first (checkpoints on request); a deleted
adapter's versions are left out. `zip_builder` builds nothing until it is called.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import adapters, export
from core.db import session_scope
from core.db.tables import Adapter, AdapterVersion, Dataset
from core.settings import Settings
from core.users import Actor
from trainer.shared import methods


@dataclass(frozen=True)
class AdapterRow:
    version_id: str
    adapter: str
    version: int | None
    label: str  # "support-bot v2" (as the playground lists it)
    base_model: str
    dataset: str
    settings: str  # one line: method, rank, alpha, quantisation, epochs, learning rate
    final_loss: float | None
    eval_loss: float | None
    size_bytes: int | None
    created_at: dt.datetime
    job_id: str | None
    status: str
    is_checkpoint: bool
    on_volume: bool  # the inference server can load it
    stored: bool  # its files are in storage (downloadable)
    parent: str = ""  # the version it continued ("support-bot v1"), e.g. DPO on an SFT version

    @property
    def zip_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-") + ".zip"


def _method(s: Mapping[str, Any]) -> str:
    """The method's words ("DPO β=0.1 (sigmoid)", "ORPO λ=0.1"); "" for SFT."""
    return methods.words(s.get("method") or methods.Method.SFT, s.get("preference"))


def _settings_line(s: Mapping[str, Any]) -> str:
    lora = s.get("lora") or {}
    t = s.get("training") or {}
    method = _method(s)
    parts = [method] if method else []
    if lora.get("r") is not None:
        parts.append(f"r={lora['r']} α={lora.get('alpha')}")
    if s.get("quantization"):
        parts.append(str(s["quantization"]))
    if t.get("max_steps"):
        parts.append(f"{t['max_steps']} steps")
    elif t.get("epochs") is not None:
        parts.append(f"{t['epochs']:g} epoch(s)")
    if t.get("learning_rate") is not None:
        parts.append(f"lr {t['learning_rate']:g}")
    return ", ".join(parts)


def adapter_rows(
    actor: Actor, session: Session, limit: int | None = None, include_checkpoints: bool = False
) -> list[AdapterRow]:
    """The actor's adapter versions, newest first."""
    stmt = (
        select(AdapterVersion, Dataset.name, repo_adapter_name())
        .outerjoin(Dataset, Dataset.id == AdapterVersion.dataset_id)
        .where(AdapterVersion.owner_id == actor.user_id, AdapterVersion.deleted_at.is_(None))
        .order_by(AdapterVersion.created_at.desc(), AdapterVersion.id)
    )
    if not include_checkpoints:
        stmt = stmt.where(AdapterVersion.version.is_not(None))
    if limit is not None:
        stmt = stmt.limit(limit)
    out = []
    found = list(session.execute(stmt))
    parents = _labels(actor, session, {v.parent_version_id for v, _, _ in found} - {None})
    for v, ds_name, name in found:
        if name is None:
            continue
        label = adapters.label(name, v)
        out.append(
            AdapterRow(
                version_id=v.id,
                adapter=name,
                version=v.version,
                label=label,
                base_model=v.base_model,
                dataset=ds_name or "",
                settings=_settings_line(v.settings or {}),
                final_loss=v.final_loss,
                eval_loss=v.eval_loss,
                size_bytes=v.size_bytes,
                created_at=v.created_at,
                job_id=v.job_id,
                status=v.status,
                is_checkpoint=v.is_checkpoint,
                on_volume=bool(v.volume_path),
                stored=bool(v.storage_prefix),
                parent=parents.get(v.parent_version_id, ""),
            )
        )
    return out


def _labels(actor: Actor, session: Session, version_ids: set[str]) -> dict[str, str]:
    """The label ("name vN") of each of the actor's versions `version_ids`."""
    if not version_ids:
        return {}
    stmt = (
        select(AdapterVersion, Adapter.name)
        .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
        .where(AdapterVersion.id.in_(version_ids), AdapterVersion.owner_id == actor.user_id)
    )
    return {v.id: adapters.label(name, v) for v, name in session.execute(stmt)}


def repo_adapter_name() -> Any:
    """The live adapter's name for a version row (a correlated subquery; NULL when deleted)."""
    return (
        select(Adapter.name)
        .where(Adapter.id == AdapterVersion.adapter_id, Adapter.deleted_at.is_(None))
        .scalar_subquery()
    )


def zip_builder(
    actor: Actor, settings: Settings, store: Any, version_id: str
) -> Callable[[], bytes]:
    """A function that builds the version's export zip (`core.export.export_zip`: PEFT
    files, brightrun.json, model card) when called: a download builds it on the click, not
    on every page view."""

    def build() -> bytes:
        with session_scope(settings) as s:
            return export.export_zip(actor, s, store, version_id)[1]

    return build
