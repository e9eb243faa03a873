"""Shared helpers for the jobs tests."""

from __future__ import annotations

import json
from typing import Any

from core import db
from core.clients.storage import dataset_normalized_key, make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import Actor


def add_dataset(
    settings: Settings,
    actor: Actor,
    rows: list[dict[str, Any]],
    name: str = "toy",
    stats: dict[str, Any] | None = None,
) -> str:
    """Store normalised chat rows as the actor's dataset (as `core.datasets` would)."""
    store = make_blob_store(settings)
    dataset_id = repo.new_id("ds")
    key = dataset_normalized_key(actor.user_id, dataset_id)
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    store.put_bytes("datasets", key, body, "application/x-ndjson")
    with db.session_scope(settings) as s:
        repo.create_dataset(
            actor,
            s,
            name=name,
            file_format="jsonl",
            layout="messages",
            rows=len(rows),
            valid_rows=len(rows),
            normalized_key=key,
            dataset_id=dataset_id,
            stats=stats,
        )
    return dataset_id
