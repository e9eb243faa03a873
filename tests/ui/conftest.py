"""UI test fixtures: a migrated database in a temporary data folder, seeding helpers, and
an AppTest opened on a page through the app's own navigation."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core import db
from core.db import repo, tables
from core.settings import Settings, load_settings
from core.users import LOCAL_ACTOR
from tests.conftest import ROOT


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    s = load_settings()
    db.upgrade(s)
    return s


@pytest.fixture
def endpoint(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A scripted RunPod endpoint on loopback that the pages talk to. Each job plays
    `fake.script(spec)` (default: three metrics chunks, then done)."""
    from tests.jobs.runpod_fake import RunPodFake, ServedFake

    fake = RunPodFake(queue_s=0.0)
    with ServedFake(fake) as served:
        monkeypatch.setenv("GPU_CLUSTER_API_URL", served.url)
        monkeypatch.setenv("GPU_CLUSTER_API_KEY", fake.api_key)
        yield fake


@pytest.fixture
def open_page(settings: Settings) -> Callable[..., AppTest]:
    def _open(page: str, query: dict[str, str] | None = None) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.run()
        if query:
            at.query_params.update(query)
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, at.exception
        return at

    return _open


def seed_dataset(settings: Settings, name: str = "support chats") -> str:
    with db.session_scope(settings) as s:
        ds_id = repo.new_id("ds")
        ds = repo.create_dataset(
            LOCAL_ACTOR,
            s,
            name=name,
            file_format="jsonl",
            layout="messages",
            rows=40,
            valid_rows=40,
            normalized_key=f"local/{ds_id}/normalized.jsonl",
            dataset_id=ds_id,
        )
        return ds.id


def seed_job(
    settings: Settings,
    dataset_id: str | None,
    *,
    status: str = "COMPLETED",
    model: str = "Qwen/Qwen2.5-0.5B-Instruct",
    adapter: str = "support-bot",
    cost: float = 0.5,
    loss: float | None = 1.2,
    minutes_ago: float = 30,
    metrics: int = 0,
    spec: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    now = tables.utcnow()  # the test's pinned clock, when it pins one
    with db.session_scope(settings) as s:
        job = repo.create_job(
            LOCAL_ACTOR,
            s,
            base_model=model,
            spec=spec or {},
            dataset_id=dataset_id,
            adapter_name=adapter,
            gpu_type="H100_80GB_PCIE",
            rate_per_s=0.00116,
            budget_usd=10.0,
        )
        started = now - dt.timedelta(minutes=minutes_ago)
        done = status in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
        repo.update_job(
            LOCAL_ACTOR,
            s,
            job.id,
            status=status,
            started_at=started,
            finished_at=started + dt.timedelta(minutes=10) if done else None,
            runpod_job_id=f"rp-{job.id}",
            cost_usd=cost,
            final_loss=loss,
            **fields,
        )
        if metrics:
            repo.append_events(
                LOCAL_ACTOR,
                s,
                job.id,
                [
                    {
                        "seq": i,
                        "type": "metrics",
                        "ts": time.time(),
                        "data": {
                            "step": i + 1,
                            "total_steps": metrics,
                            "loss": 3.0 - 2.0 * i / metrics,
                            "lr": 2e-4,
                            "tokens_per_s": 1000.0,
                            **({"eval_loss": 2.5 - i / metrics} if (i + 1) % 10 == 0 else {}),
                        },
                    }
                    for i in range(metrics)
                ],
            )
        if done and cost:
            repo.record_cost(LOCAL_ACTOR, s, job_id=job.id, seconds=cost / 0.00116, usd=cost)
        return job.id


def text_of(at: AppTest) -> str:
    """Everything a user reads on the page (markdown, captions, alerts, metrics), unescaped."""
    parts: list[str] = []
    for kind in (
        "title",
        "subheader",
        "markdown",
        "caption",
        "text",
        "error",
        "warning",
        "info",
        "success",
        "code",
    ):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(parts).replace("\\", "")
