"""The Adapters page's "Export → GGUF" (AppTest): each variant with its expected size, a
refused base with its reason and the button off, an export whose stored files come back as
signed links, and a base above the controller's limit exported by a job (on a scripted
endpoint) whose progress shows until its files come back as signed links."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import db
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.adapters.test_gguf import base, lora  # noqa: F401 - fixtures
from tests.ui.conftest import endpoint, open_page, seed_dataset, seed_job  # noqa: F401 - fixture


def _version(settings: Settings, base_model: str, files: Path | None = None) -> str:
    ds = seed_dataset(settings)
    job = seed_job(settings, ds, adapter="support-bot", cost=0.5)
    vid = "av-ggufpage01"
    if files is not None:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            make_blob_store(settings).put_file(
                "adapters", adapter_key("local", vid, name), files / name, "application/json"
            )
    with db.session_scope(settings) as s:
        return repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="support-bot",
            base_model=base_model,
            job_id=job,
            dataset_id=ds,
            version_id=vid,
            storage_prefix=adapter_prefix("local", vid) if files else None,
            size_bytes=40_000,
        ).id


def test_variants_show_their_expected_size(settings: Settings, open_page) -> None:  # noqa: F811
    vid = _version(settings, "Qwen/Qwen2.5-1.5B-Instruct")
    at = open_page("adapters")
    box = at.selectbox(key=f"adapters.gguf.{vid}")
    assert "merged, Q4_K_M — about 945.5 MB" in box.options, box.options
    assert not at.button(key="adapters.gguf_export").disabled


def test_a_moe_base_is_refused_with_the_reason(settings: Settings, open_page) -> None:  # noqa: F811
    _version(settings, "Qwen/Qwen3-30B-A3B")
    at = open_page("adapters")
    assert any("mixture-of-experts" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.button(key="adapters.gguf_export").disabled


@pytest.mark.slow
def test_export_gguf_lists_signed_links(
    settings: Settings,
    open_page,  # noqa: F811
    base: Path,  # noqa: F811
    lora: Path,  # noqa: F811
) -> None:
    _version(settings, str(base), lora)
    at = open_page("adapters")
    at.button(key="adapters.gguf_export").click().run()
    assert not at.exception, at.exception
    links = [m.value for m in at.markdown if ".gguf](" in m.value]
    assert links and "support-bot-v1-f16.gguf" in links[0] and "sig=" in links[0], links


def test_a_base_above_the_local_limit_is_written_by_a_gpu_job(
    settings: Settings,
    open_page,  # noqa: F811
) -> None:
    from core import export

    vid = _version(settings, "Qwen/Qwen3-8B")
    at = open_page("adapters")
    captions = [c.value for c in at.caption]
    assert any("a job on the GPU endpoint merges and writes it" in c for c in captions), captions
    assert not at.button(key="adapters.gguf_export").disabled
    # its f16 (16 GB) is above one upload: the caption says in how many files it is written
    f16 = export.gguf_plans(LOCAL_ACTOR, settings, vid)[0]
    assert f16.variant == "f16" and f16.shards > 2
    assert any(f"split GGUF in {f16.shards} files" in c for c in captions), captions


def test_a_job_export_shows_its_progress_then_the_signed_links(
    settings: Settings,
    endpoint,  # noqa: F811
    open_page,  # noqa: F811
    lora: Path,  # noqa: F811
) -> None:
    import time

    from core.export.gguf_job import gguf_prefix

    # The scripted worker merges, writes half the file, then works on for a while and completes.
    stage = {"step": 2, "steps": 3, "stage": "write", "fraction": 0.5}
    endpoint.script = lambda spec: {
        "chunks": 30,  # 15 s: the page sees it running however slow a rerun is here
        "interval_s": 0.5,
        "events": [
            {"type": "started", "data": {}},
            {"type": "progress", "data": {"step": 1, "steps": 3, "stage": "merge", "fraction": 0}},
            {"type": "progress", "data": stage},
        ],
        "final": {"type": "completed", "data": {}},
    }
    vid = _version(settings, "Qwen/Qwen3-8B", lora)
    at = open_page("adapters")
    at.button(key="adapters.gguf_export").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    job_id = at.session_state[f"adapters.gguf_job.{vid}"]
    assert job_id and f"Job {job_id}:" in str([p.proto.text for p in at.get("progress")])
    # What the worker uploads, where the job's upload URLs point: no links until it completed.
    store = make_blob_store(settings)
    for name in ("Modelfile", "support-bot-v1-f16.gguf"):
        store.put_bytes("adapters", gguf_prefix("local", job_id) + name, b"x" * 10, "text/plain")
    deadline = time.monotonic() + 30
    while "writing the GGUF" not in str([p.proto.text for p in at.get("progress")]):
        assert time.monotonic() < deadline, [p.proto.text for p in at.get("progress")]
        time.sleep(0.3)
        at.run()
    (bar,) = at.get("progress")
    assert bar.proto.text == f"Job {job_id}: writing the GGUF (step 2 of 3, 50%)"
    assert bar.proto.value == 50  # half of the second of three stages
    assert not [m for m in at.markdown if ".gguf](" in m.value]  # no links while it runs
    deadline = time.monotonic() + 30
    while not [m for m in at.markdown if ".gguf](" in m.value]:
        assert time.monotonic() < deadline, [p.proto.text for p in at.get("progress")]
        time.sleep(0.3)
        at.run()
    assert not at.exception, at.exception
    (link,) = [m.value for m in at.markdown if ".gguf](" in m.value]
    assert "support-bot-v1-f16.gguf" in link and "sig=" in link and "10 B" in link, link
    assert "done" in str([p.proto.text for p in at.get("progress")])
