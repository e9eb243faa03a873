"""Versions and lineage: numbering v1, v2, ...; checkpoints registered from a running job's
events and promoted; continued training recorded as the parent; references; another
user's versions behave as missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core import adapters, db, jobs
from core.clients.storage import make_blob_store
from core.db import repo
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from tests.adapters.conftest import ALICE, BOB
from trainer.shared.spec import Event

SPEC = {
    "lora": {"r": 8, "alpha": 16, "target_modules": "all-linear"},
    "training": {"max_steps": 20},
    "quantization": "none",
}


def _job(s, actor=ALICE, name="bot", resume_from=None):
    return repo.create_job(
        actor,
        s,
        base_model="tiny",
        spec=SPEC,
        adapter_name=name,
        resume_from_version_id=resume_from,
    )


def _final(s, job, name="bot", actor=ALICE, loss=0.5):
    return repo.create_adapter_version(
        actor,
        s,
        adapter_name=name,
        base_model="tiny",
        job_id=job.id,
        final_loss=loss,
        parent_version_id=job.resume_from_version_id,
        settings=SPEC,
    )


def test_versions_are_numbered_and_continued_training_is_the_parent(settings: Settings) -> None:
    with db.session_scope(settings) as s:
        v1 = _final(s, _job(s))
        v2 = _final(s, _job(s, resume_from=v1.id))
        v3 = _final(s, _job(s, resume_from=v2.id))
        other = _final(s, _job(s, name="other"), name="other")
        assert (v1.version, v2.version, v3.version, other.version) == (1, 2, 3, 1)

        chain = adapters.lineage(ALICE, s, "bot:v3")
        assert [c.label for c in chain] == ["bot v3", "bot v2", "bot v1"]
        assert chain[0].parent_label == "bot v2" and chain[-1].parent_id is None

        # References: newest by name, a number three ways, an id.
        assert adapters.resolve(ALICE, s, "bot").id == v3.id
        for ref in ("bot:v1", "bot@1", "bot v1", v1.id):
            assert adapters.resolve(ALICE, s, ref).id == v1.id
        with pytest.raises(NotFound, match="no version 9"):
            adapters.resolve(ALICE, s, "bot:v9")
        with pytest.raises(InvalidInput):
            adapters.resolve(ALICE, s, " ")

        # A deleted version keeps its number: the next one is v4.
        adapters.delete_version(ALICE, s, None, "bot:v3")
        assert _final(s, _job(s)).version == 4
        assert [r.label for r in adapters.list_versions(ALICE, s, "bot")] == [
            "bot v1",
            "bot v2",
            "bot v4",
        ]

        # Bob sees none of it.
        with pytest.raises(NotFound):
            adapters.resolve(BOB, s, v1.id)
        with pytest.raises(NotFound):
            adapters.lineage(BOB, s, "bot")


def test_checkpoints_from_events_are_registered_once_and_promoted_with_their_files(
    settings: Settings, tmp_path: Path, tiny_adapter: Path
) -> None:
    store = make_blob_store(settings)
    folder = tmp_path / "volume" / "adapters" / ".checkpoints" / "job-x" / "step-4"
    shutil.copytree(tiny_adapter, folder)
    with db.session_scope(settings) as s:
        parent = _final(s, _job(s))
        job = _job(s, resume_from=parent.id)
        events = [
            Event(seq=0, type="started", data={}),
            *[
                Event(seq=i, type="metrics", data={"step": i, "loss": 3.0 - 0.5 * i})
                for i in range(1, 5)
            ],
            Event(
                seq=5,
                type="checkpoint",
                data={"step": 4, "path": "/ck/step-0000004", "adapter_path": str(folder)},
            ),
            Event(
                seq=6, type="checkpoint", data={"step": 8, "path": "/ck/step-0000008"}
            ),  # no adapter: skipped
        ]
        repo.append_events(ALICE, s, job.id, events)
        first = adapters.register_checkpoints(ALICE, s, job, events)
        again = adapters.register_checkpoints(ALICE, s, job, events)
        assert [c.id for c in first] == [c.id for c in again] and len(first) == 1
        ck = first[0]
        assert ck.is_checkpoint and ck.version is None and ck.step == 4
        assert ck.parent_version_id == parent.id and ck.volume_path == str(folder)
        assert ck.loss_curve == [[1, 2.5], [2, 2.0], [3, 1.5], [4, 1.0]] and ck.final_loss == 1.0
        assert [r.label for r in adapters.list_versions(ALICE, s, "bot")] == [
            "bot v1",
            "bot step 4",
        ]

        promoted = adapters.promote(ALICE, s, store, ck.id)
        assert promoted.version == 2 and promoted.is_checkpoint
        assert adapters.info(ALICE, s, promoted).label == "bot v2 step 4"
        assert adapters.promote(ALICE, s, store, ck.id).version == 2  # idempotent
        stored = {b.key.rsplit("/", 1)[-1] for b in store.list("adapters", promoted.storage_prefix)}
        assert stored == {"adapter_config.json", "adapter_model.safetensors"}
        assert promoted.size_bytes == sum((folder / f).stat().st_size for f in stored)
        # The promoted checkpoint can be continued from storage (a signed URL of its weights).
        cont = _job(s, resume_from=promoted.id)
        s.commit()
    url = adapters.parent_source(ALICE, settings, cont.id, store)
    assert (
        url.startswith(settings.public_base_url)
        and "adapter_model.safetensors" in url
        and "sig=" in url
    )


def test_continue_training_refuses_a_different_lora_shape_before_launching(
    settings: Settings,
) -> None:
    with db.session_scope(settings) as s:
        v1 = _final(s, _job(s))
        repo.update_version(ALICE, s, v1.id, volume_path="/somewhere/bot")
        ds = repo.create_dataset(
            ALICE, s, name="d", file_format="jsonl", layout="messages", rows=1, valid_rows=1
        )
    with pytest.raises(InvalidInput, match="lora.r 16 differs from the parent's 8"):
        jobs.continue_training(ALICE, settings, "bot", dataset_id=ds.id, lora={"r": 16})
    with db.session_scope(settings) as s:
        assert repo.list_jobs(ALICE, s) and all(
            j.resume_from_version_id is None for j in repo.list_jobs(ALICE, s)
        )
        assert len(repo.list_jobs(ALICE, s)) == 1  # nothing launched


def test_version_info_is_json_ready(settings: Settings) -> None:
    with db.session_scope(settings) as s:
        v1 = _final(s, _job(s))
        d = adapters.info(ALICE, s, v1).to_dict()
    assert json.loads(json.dumps(d))["label"] == "bot v1"
