"""The Settings page's health check: whether each configured part answers (database,
storage, GPU endpoint, inference), with what is configured; secrets are never part of the
answer, and an unreachable part is reported, never raised."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core import db
from core.errors import BrightRunError
from core.settings import Settings


@dataclass(frozen=True)
class PartHealth:
    part: str
    ok: bool
    configured: str  # what is set up (URLs, backends; never a secret)
    detail: str  # what answered, or why not


def _check(part: str, configured: str, probe: Callable[[], str]) -> PartHealth:
    try:
        return PartHealth(part, True, configured, probe())
    except (BrightRunError, OSError, ValueError, RuntimeError) as e:
        return PartHealth(part, False, configured, f"{type(e).__name__}: {e}")


def health(settings: Settings, *, store: Any, runpod: Any, inference: Any) -> list[PartHealth]:
    """Probe each configured part; an unreachable part is reported, never raised."""
    view = settings.public_view()

    def database() -> str:
        try:
            current = db.current_revision(settings)
        except SQLAlchemyError as e:
            raise RuntimeError(f"cannot connect ({type(e).__name__})") from None
        head = db.head_revision()
        if current != head:
            raise RuntimeError(
                f"schema at {current or 'nothing'}, code expects {head}: run `brightrun db upgrade`"
            )
        return f"connected, schema {current} (up to date)"

    def storage() -> str:
        store.exists("datasets", "health-check/probe")
        return "reachable"

    def endpoint() -> str:
        h = runpod.health()
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(h.jobs.items())) or "no jobs"
        workers = ", ".join(f"{k} {v}" for k, v in sorted(h.workers.items())) or "no workers"
        return f"answering: jobs {jobs}; workers {workers}"

    def serving() -> str:
        models = inference.models()
        base = [m.id for m in models if not m.is_adapter]
        return (
            f"serving {', '.join(base) or 'no base model'} and {len(models) - len(base)} adapter(s)"
        )

    storage_cfg = (
        f"local folder {settings.data_dir / 'blobs'}"
        if settings.storage == "local"
        else f"Supabase Storage at {settings.supabase_url} (key {view['supabase_key']})"
    )
    return [
        _check("database", view["database_url"], database),
        _check("storage", storage_cfg, storage),
        _check(
            "GPU endpoint",
            f"{settings.gpu_cluster_api_url} (key {view['gpu_cluster_api_key']})",
            endpoint,
        ),
        _check("inference", f"{settings.inference_url} (key {view['inference_api_key']})", serving),
    ]
