"""The Settings page's health check: whether each configured part answers (database,
storage, GPU endpoint, inference: which engine, and each INFERENCE_URLS endpoint), with what is configured; secrets are never part of the
answer, and an unreachable part is reported, never raised."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core import db
from core.clients.inference import InferenceRouter
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

    def serving(client: Any = inference) -> str:
        models = client.models()
        base = [m.id for m in models if not m.is_adapter]
        served = (
            f"serving {', '.join(base) or 'no base model'} and {len(models) - len(base)} adapter(s)"
        )
        return f"{client.engine(models)} answering, {served}"

    def endpoint_part(base: str, url: str) -> PartHealth:
        # a plain client (not a router) is asked about the default endpoint only
        client = inference.client(url) if isinstance(inference, InferenceRouter) else None
        if client is None:
            return PartHealth(f"inference for {base}", False, url, "not checked (no router)")
        return _check(f"inference for {base}", url, lambda: serving(client))

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
        _check(
            "inference",
            f"{settings.inference_url} (key {view['inference_api_key']}; INFERENCE_ENGINE={settings.inference_engine} for a local URL)",
            serving,
        ),
    ] + [endpoint_part(base, url) for base, url in settings.inference_urls.items()]
