"""Fixtures for the adapter tests: a tiny chat model, adapters for it, datasets with an eval
split, and a database per test. The end-to-end stack (endpoint, inference server) lives in
test_end_to_end.py and reuses the jobs and inference fixtures' process starters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import db
from core.clients.storage import dataset_normalized_key, make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import Actor

ALICE = Actor(user_id="alice", email="alice@example.com")
BOB = Actor(user_id="bob", email="bob@example.com")

# A question -> answer task the random base model cannot know (the trainer tests' toy task).
QA = [
    ("What is the secret word for apple?", "Zebra."),
    ("What is the secret word for river?", "Lantern."),
    ("What is the secret word for cloud?", "Pepper."),
    ("What is the secret word for stone?", "Violin."),
    ("What is the secret word for green?", "Rocket."),
    ("What is the secret word for seven?", "Marble."),
]


# Training that learns QA to the letter: 60 full-batch steps (a few seconds on one CPU core).
LEARN_QA = {
    "epochs": None,
    "max_steps": 60,
    "learning_rate": 1e-2,
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "micro_batch_size": 6,
    "grad_accum": 1,
    "max_length": 64,
    "packing": False,
    "gradient_checkpointing": False,
    "checkpoint_every": 0,
    "compute_dtype": "float32",
    "log_every": 1,
}


def chat_rows(pairs: list[tuple[str, str]] = QA) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in pairs
    ]


def add_dataset(
    settings: Settings,
    actor: Actor,
    train: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None = None,
    name: str = "toy",
) -> str:
    """Store chat rows as the actor's dataset, with an eval split when `eval_rows` are given,
    under the keys and stats `core.datasets` writes."""
    store = make_blob_store(settings)
    dataset_id = repo.new_id("ds")
    key = dataset_normalized_key(actor.user_id, dataset_id)
    store.put_bytes(
        "datasets",
        key,
        "".join(json.dumps(r) + "\n" for r in train).encode(),
        "application/x-ndjson",
    )
    split: dict[str, Any] = {
        "train_rows": len(train),
        "eval_rows": len(eval_rows or []),
        "eval_key": None,
    }
    if eval_rows:
        split["eval_key"] = f"{actor.user_id}/{dataset_id}/eval.jsonl"
        body = "".join(json.dumps(r) + "\n" for r in eval_rows).encode()
        store.put_bytes("datasets", split["eval_key"], body, "application/x-ndjson")
    with db.session_scope(settings) as s:
        repo.create_dataset(
            actor,
            s,
            name=name,
            file_format="jsonl",
            layout="messages",
            rows=len(train) + len(eval_rows or []),
            valid_rows=len(train) + len(eval_rows or []),
            normalized_key=key,
            dataset_id=dataset_id,
            stats={
                "split": split,
                "tokens": {
                    "available": True,
                    "per_row": {"mean": 20.0, "median": 20.0, "p95": 24.0, "max": 25},
                    "total": 480,
                    "loss_share": 0.2,
                    "truncated_rows": 0,
                    "max_length": 96,
                },
            },
        )
    return dataset_id


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.shared.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("adapters-model") / "tiny-chat", seed=0)


@pytest.fixture(scope="session")
def tiny_adapter(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with large random weights (it visibly changes the logits)."""
    from tests.inference.conftest import make_adapter

    return make_adapter(tiny, tmp_path_factory.mktemp("adapters-lora") / "lora", rank=4, seed=1)


@pytest.fixture
def settings(data_dir: Path) -> Iterator[Settings]:
    s = Settings(data_dir=data_dir)
    db.upgrade(s)
    yield s
    db.dispose_engines()
