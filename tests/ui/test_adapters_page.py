"""Adapters page: every version with base model, dataset, settings, losses and size;
download as a zip, open in the playground, delete with confirmation."""

from __future__ import annotations

from core import db
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import seed_dataset, seed_job, text_of


def _adapter(
    settings: Settings,
    name: str = "support-bot",
    volume: str | None = None,
    parent: str | None = None,
    method: dict | None = None,
    ds: str | None = None,
) -> str:
    store = make_blob_store(settings)
    ds = ds or seed_dataset(settings)
    job = seed_job(settings, ds, adapter=name)
    vid = "av-" + job.removeprefix("job-")
    store.put_bytes(
        "adapters",
        adapter_key("local", vid, "adapter_model.safetensors"),
        b"w" * 2500,
        "application/octet-stream",
    )
    store.put_bytes(
        "adapters", adapter_key("local", vid, "adapter_config.json"), b"{}", "application/json"
    )
    with db.session_scope(settings) as s:
        repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name=name,
            base_model="Qwen/Qwen3-4B",
            job_id=job,
            dataset_id=ds,
            parent_version_id=parent,
            settings={
                "lora": {"r": 16, "alpha": 32},
                "quantization": "nf4",
                "training": {"epochs": 1, "learning_rate": 2e-4},
                **(method or {}),
            },
            final_loss=0.75,
            eval_loss=0.9,
            size_bytes=2502,
            storage_prefix=adapter_prefix("local", vid),
            volume_path=volume,
            version_id=vid,
        )
    return vid


def test_list_download_and_delete(settings: Settings, open_page) -> None:
    _adapter(settings)
    at = open_page("adapters")
    table = at.dataframe[0].value
    row = table.iloc[0].to_dict()
    assert (
        row["adapter"] == "support-bot v1"
        and row["base model"] == "Qwen/Qwen3-4B"
        and row["dataset"] == "support chats"
    )
    assert (
        row["settings"] == "r=16 α=32, nf4, 1 epoch(s), lr 0.0002"
        and row["final loss"] == 0.75
        and row["size"] == "2.5 KB"
    )
    (download,) = at.get("download_button")
    assert download.proto.label == "Download zip"
    assert at.button(key="adapters.playground").disabled  # not on the inference server's volume

    at.button(key="adapters.delete").click().run()
    assert "Delete adapter support-bot and all its versions?" in text_of(at)
    at.button(key="adapters.confirm_delete.yes.support-bot").click().run()
    assert not at.exception and "No adapters yet" in text_of(at)
    assert make_blob_store(settings).list("adapters", "local/") == []


def test_a_dpo_version_shows_its_method_and_the_version_it_continued(
    settings: Settings, open_page
) -> None:
    ds = seed_dataset(settings)
    sft = _adapter(settings, ds=ds)
    _adapter(
        settings,
        parent=sft,
        method={"method": "dpo", "preference": {"beta": 0.2, "loss_type": "sigmoid"}},
        ds=ds,
    )
    orpo = {"method": "orpo", "preference": {"orpo_lambda": 0.1}}
    _adapter(settings, name="tone", method=orpo, ds=ds)
    at = open_page("adapters")
    rows = {r["adapter"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert rows["support-bot v2"]["settings"].startswith("DPO β=0.2 (sigmoid), r=16 α=32")
    assert rows["support-bot v2"]["continued from"] == "support-bot v1"
    assert (
        rows["support-bot v1"]["settings"].startswith("r=16")
        and not rows["support-bot v1"]["continued from"]
    )
    assert rows["tone v1"]["settings"].startswith("ORPO λ=0.1, r=16")
    at.selectbox(key="adapters.selected").set_value(
        next(r.version_id for r in _rows(settings) if r.label == "support-bot v2")
    ).run()
    from components.widgets import plain  # the caption escapes markdown

    assert any(f"continued from {plain('support-bot v1')}" in c.value for c in at.caption)


def _rows(settings: Settings) -> list:
    from core import queries

    with db.session_scope(settings) as s:
        return queries.adapter_rows(LOCAL_ACTOR, s)


def test_open_in_playground(settings: Settings, open_page, tmp_path) -> None:
    _adapter(settings, volume=str(tmp_path / "volume" / "adapters" / "support-bot"))
    at = open_page("adapters")
    at.button(key="adapters.playground").click().run()
    assert at.title[0].value == "Playground"
