"""`brightrun adapters ...` and `brightrun cache-model` as the local user: list, versions,
show with lineage, promote, export, the merge plan, delete; errors as one line."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from core import db
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR


def _seed(settings: Settings, tiny_adapter: Path, tmp_path: Path) -> dict[str, str]:
    store = make_blob_store(settings)
    spec = {"lora": {"r": 4, "alpha": 8}, "training": {"max_steps": 5}, "quantization": "none"}
    ck_folder = tmp_path / "ck" / "step-3"
    shutil.copytree(tiny_adapter, ck_folder)
    with db.session_scope(settings) as s:
        j1 = repo.create_job(
            LOCAL_ACTOR, s, base_model="Qwen/Qwen2.5-7B-Instruct", spec=spec, adapter_name="bot"
        )
        vid = "av-cli0000001"
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            store.put_file(
                "adapters",
                adapter_key("local", vid, name),
                tiny_adapter / name,
                "application/octet-stream",
            )
        v1 = repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="bot",
            base_model="Qwen/Qwen2.5-7B-Instruct",
            job_id=j1.id,
            settings=spec,
            final_loss=0.5,
            version_id=vid,
            storage_prefix=adapter_prefix("local", vid),
            size_bytes=1000,
        )
        j2 = repo.create_job(
            LOCAL_ACTOR,
            s,
            base_model="Qwen/Qwen2.5-7B-Instruct",
            spec=spec,
            adapter_name="bot",
            resume_from_version_id=v1.id,
        )
        ck = repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="bot",
            base_model="Qwen/Qwen2.5-7B-Instruct",
            job_id=j2.id,
            parent_version_id=v1.id,
            is_checkpoint=True,
            step=3,
            volume_path=str(ck_folder),
        )
        return {"v1": v1.id, "ck": ck.id}


def test_adapters_commands(settings: Settings, tiny_adapter: Path, tmp_path: Path) -> None:
    ids = _seed(settings, tiny_adapter, tmp_path)
    run = CliRunner().invoke

    r = run(app, ["adapters", "list", "--json"])
    assert r.exit_code == 0, r.output
    assert [x["label"] for x in json.loads(r.output)] == ["bot v1"]

    r = run(app, ["adapters", "versions", "bot", "--json"])
    assert [x["label"] for x in json.loads(r.output)] == ["bot v1", "bot step 3"]

    r = run(app, ["adapters", "promote", ids["ck"]])
    assert r.exit_code == 0 and "promoted: bot v2 step 3" in r.output

    r = run(app, ["adapters", "show", "bot:v2", "--json"])
    shown = json.loads(r.output)
    assert (
        shown["label"] == "bot v2 step 3"
        and shown["lineage"] == ["bot v1"]
        and shown["stored"] is True
    )

    out = tmp_path / "bot.zip"
    r = run(app, ["adapters", "export", "bot:v1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {"README.md", "brightrun.json", "adapter_model.safetensors"} <= set(
        zipfile.ZipFile(out).namelist()
    )

    r = run(app, ["adapters", "merge", "bot:v1", "--plan-only", "--gpu", "H100_80GB_PCIE"])
    assert r.exit_code == 0, r.output
    assert (
        "merge of Qwen/Qwen2.5-7B-Instruct in bfloat16: needs" in r.output and "(fits)" in r.output
    )

    r = run(app, ["adapters", "show", "bot:v7"])
    assert r.exit_code == 2 and r.output.strip() == "error: adapter 'bot' has no version 7"

    r = run(app, ["adapters", "delete", "bot:v1", "--yes"])
    assert r.exit_code == 0
    r = run(app, ["adapters", "versions", "bot", "--json"])
    assert [x["label"] for x in json.loads(r.output)] == ["bot v2 step 3"]

    r = run(app, ["cache-model", "org/some-model", "--status"])
    assert r.exit_code == 0 and r.output.strip() == "not cached"


def test_push_with_your_own_token_sends_that_token_only_to_the_hub(
    settings: Settings, tiny_adapter: Path, tmp_path: Path, monkeypatch
) -> None:
    import huggingface_hub.constants

    from tests.adapters.hub_fake import HubFake

    _seed(settings, tiny_adapter, tmp_path)
    hub = HubFake().start()
    try:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # loopback only
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_deployment_token")
        own = "hf_own_token_cli_5e1"
        r = CliRunner().invoke(
            app,
            ["adapters", "push", "bot:v1", "--repo", "someone/bot", "--own-token"],
            env={"HF_USER_TOKEN": own},
        )
        assert r.exit_code == 0, r.output
        assert "files to" in r.output and "someone/bot" in r.output and own not in r.output
        assert hub.requests and all(q.authorization == f"Bearer {own}" for q in hub.requests)
    finally:
        hub.close()
