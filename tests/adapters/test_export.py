"""Export: the zip's contents (PEFT files, brightrun.json, model card, loss curve), the Hub
push with `huggingface_hub`'s own client against a loopback server that follows the Hub's
upload API (the token reaches the client and no file), and the merge planner."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from pydantic import SecretStr

from core import db, export, planner
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.db import repo
from core.errors import Forbidden, InvalidInput, NotFound
from core.settings import Settings
from core.users import Actor
from tests.adapters.conftest import ALICE, BOB, add_dataset, chat_rows
from tests.adapters.hub_fake import HubFake

TOKEN = "hf_TESTtokenNeverStored0123456789"
EVAL = {
    "status": "done",
    "rows": 6,
    "server_base": "tiny",
    "metrics": ["exact_match", "f1", "rouge_l"],
    "adapter": {"exact_match": 1.0, "f1": 1.0, "rouge_l": 1.0},
    "base": {"exact_match": 0.0, "f1": 0.0, "rouge_l": 0.0},
    "delta": {"exact_match": 1.0, "f1": 1.0, "rouge_l": 1.0},
    "judge": None,
    "differences": [],
}


@pytest.fixture
def version(settings: Settings, tiny_adapter: Path) -> str:
    """Alice's `support-bot` v2 (continued from v1) with stored PEFT files, the worker's
    brightrun.json, a loss curve, a cost and an evaluation."""
    store = make_blob_store(settings)
    ds = add_dataset(settings, ALICE, chat_rows() * 4, chat_rows(), name="support-faq")
    spec = {
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"max_steps": 30, "learning_rate": 0.01},
        "quantization": "nf4",
        "data": {"train_url": "<signed url>"},
    }
    with db.session_scope(settings) as s:
        j1 = repo.create_job(
            ALICE, s, base_model="tiny", spec=spec, adapter_name="support-bot", dataset_id=ds
        )
        v1 = repo.create_adapter_version(
            ALICE, s, adapter_name="support-bot", base_model="tiny", job_id=j1.id, dataset_id=ds
        )
        j2 = repo.create_job(
            ALICE,
            s,
            base_model="tiny",
            spec=spec,
            adapter_name="support-bot",
            dataset_id=ds,
            resume_from_version_id=v1.id,
        )
        repo.update_job(
            ALICE, s, j2.id, cost_usd=0.0123, status="COMPLETED", gpu_type="H100_80GB_PCIE"
        )
        vid = "av-export0001"
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            store.put_file(
                "adapters",
                adapter_key(ALICE.user_id, vid, name),
                tiny_adapter / name,
                "application/octet-stream",
            )
        worker_record = {
            "spec": spec,
            "summary": {"final_loss": 0.02},
            "metrics": [{"step": 1, "loss": 3.1}],
        }
        store.put_bytes(
            "adapters",
            adapter_key(ALICE.user_id, vid, "brightrun.json"),
            json.dumps(worker_record).encode(),
            "application/json",
        )
        repo.create_adapter_version(
            ALICE,
            s,
            adapter_name="support-bot",
            base_model="tiny",
            job_id=j2.id,
            dataset_id=ds,
            parent_version_id=v1.id,
            settings={k: spec[k] for k in ("lora", "training", "quantization")},
            final_loss=0.02,
            eval_loss=0.05,
            loss_curve=[[i, 3.0 / i] for i in range(1, 31)],
            storage_prefix=adapter_prefix(ALICE.user_id, vid),
            version_id=vid,
        )
        repo.update_version(ALICE, s, vid, eval_scores=EVAL)
    return vid


def test_the_zip_holds_peft_files_record_model_card_and_loss_curve(
    settings: Settings, version: str, tiny_adapter: Path
) -> None:
    with db.session_scope(settings) as s:
        name, data = export.export_zip(ALICE, s, make_blob_store(settings), "support-bot:v2")
        with pytest.raises(NotFound):
            export.export_zip(BOB, s, make_blob_store(settings), version)
    assert name == "support-bot-v2.zip"
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert sorted(zf.namelist()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "brightrun.json",
        "loss_curve.svg",
    ]
    assert (
        zf.read("adapter_model.safetensors")
        == (tiny_adapter / "adapter_model.safetensors").read_bytes()
    )
    record = json.loads(zf.read("brightrun.json"))
    assert (
        record["label"] == "support-bot v2"
        and record["version_id"] == version
        and record["base_model"] == "tiny"
    )
    assert [x["label"] for x in record["lineage"]] == ["support-bot v1"]
    assert record["job"]["cost_usd"] == 0.0123 and record["dataset"]["name"] == "support-faq"
    assert (
        record["dataset"]["eval_rows"] == 6
        and record["evaluation"]["adapter"]["exact_match"] == 1.0
    )
    assert (
        record["training_record"]["summary"]["final_loss"] == 0.02
    )  # the worker's own record kept
    assert len(record["loss_curve"]) == 30
    card = zf.read("README.md").decode()
    assert card.startswith('---\nbase_model: "tiny"\nlibrary_name: peft\n')
    assert (
        "- qlora" in card
        and "# support-bot v2" in card
        and "Continued from support-bot v1." in card
    )
    assert (
        "Dataset **support-faq** (messages): 30 valid rows of 30, 24 for training and 6 held out"
        in card
    )
    assert "| LoRA rank | 4 |" in card and "| learning rate | 0.01 |" in card
    assert (
        "![Training loss](loss_curve.svg)" in card
        and "Final training loss: 0.0200; eval loss: 0.0500." in card
    )
    assert "| exact match | 1.000 | 0.000 | +1.000 |" in card
    svg = zf.read("loss_curve.svg").decode()
    assert svg.startswith("<svg") and "<polyline" in svg and "step 30" in svg


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubFake]:
    """The Hub's upload API on loopback; the tests' offline switch is lifted for it alone."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    fake = HubFake().start()
    yield fake
    fake.close()


def _client(hub: HubFake, seen: list[str]):  # noqa: ANN202
    def factory(token: str) -> HfApi:
        seen.append(token)
        return HfApi(token=token, endpoint=hub.url)

    return factory


def test_push_to_hub_uploads_the_folder_with_the_token_only_in_the_client(
    settings: Settings, version: str, hub: HubFake
) -> None:
    settings = settings.model_copy(update={"hf_token": SecretStr(TOKEN)})
    _allow(settings, ALICE, "alice")
    seen: list[str] = []
    pushed = export.push_to_hub(
        ALICE, settings, version, "alice/support-bot", api_factory=_client(hub, seen)
    )
    assert seen == [TOKEN]
    calls = [(r.method, r.path) for r in hub.requests]
    assert calls == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),  # the model card's metadata
        ("POST", "/api/models/alice/support-bot/preupload/main"),
        ("POST", "/api/models/alice/support-bot/commit/main"),
    ]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.requests)
    assert hub.requests[0].body == {
        "name": "support-bot",
        "organization": "alice",
        "visibility": "private",
        "type": "model",
    }
    header, *files = hub.requests[3].body
    assert header == {
        "key": "header",
        "value": {"summary": "support-bot v2 from BrightRun", "description": ""},
    }
    assert (
        sorted(f["value"]["path"] for f in files)
        == pushed.files
        == [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "brightrun.json",
            "loss_curve.svg",
        ]
    )
    received = hub.files["alice/support-bot"]
    assert received["README.md"].decode().startswith('---\nbase_model: "tiny"')
    for path, body in received.items():
        assert TOKEN.encode() not in body, f"the token was written into {path}"
    assert pushed.url == f"{hub.url}/alice/support-bot"
    with db.session_scope(settings) as s:
        v = repo.get_version(ALICE, s, version)
        assert v.hub_repo == "alice/support-bot"
        stored = b"".join(_stored(settings, v.storage_prefix))
        assert TOKEN.encode() not in stored
        assert TOKEN not in json.dumps(v.eval_scores) + json.dumps(v.settings)
    # Pushing again to the existing repo is a new commit, not an error.
    export.push_to_hub(
        ALICE, settings, version, "alice/support-bot", api_factory=_client(hub, seen)
    )
    assert [r.path for r in hub.requests].count("/api/models/alice/support-bot/commit/main") == 2


def _stored(settings: Settings, prefix: str) -> list[bytes]:
    store = make_blob_store(settings)
    return [store.get_bytes("adapters", b.key) for b in store.list("adapters", prefix)]


def test_push_refusals_name_the_problem_and_never_echo_the_token(
    settings: Settings, version: str, hub: HubFake
) -> None:
    seen: list[str] = []
    with pytest.raises(InvalidInput, match="HF_TOKEN is not set"):
        export.push_to_hub(
            ALICE, settings, version, "alice/support-bot", api_factory=_client(hub, seen)
        )
    settings = settings.model_copy(update={"hf_token": SecretStr(TOKEN)})
    _allow(settings, ALICE, "alice")
    with pytest.raises(InvalidInput, match="your-name/model-name"):
        export.push_to_hub(
            ALICE, settings, version, "https://huggingface.co/x", api_factory=_client(hub, seen)
        )
    assert not hub.requests and not seen
    hub.refuse_with = 403
    with pytest.raises(export.ExportFailed, match="HTTP 403") as e:
        export.push_to_hub(
            ALICE, settings, version, "alice/support-bot", api_factory=_client(hub, seen)
        )
    assert TOKEN not in str(e.value)
    with db.session_scope(settings) as s:
        assert repo.get_version(ALICE, s, version).hub_repo is None


ADMIN = Actor(user_id="root", email="root@example.com", role="admin")


def _allow(settings: Settings, who: Actor, *namespaces: str) -> None:
    from core import admin

    with db.session_scope(settings) as s:
        repo.ensure_user(who, s)
        repo.ensure_user(ADMIN, s)
        admin.set_hub_namespaces(ADMIN, s, who.user_id, list(namespaces))


def test_a_member_pushes_with_the_deployments_token_only_where_an_admin_allowed(
    settings: Settings, version: str, hub: HubFake
) -> None:
    settings = settings.model_copy(update={"hf_token": SecretStr(TOKEN)})
    seen: list[str] = []
    with pytest.raises(Forbidden, match="no namespace is allowed for you") as e:
        export.push_to_hub(ALICE, settings, version, "acme/bot", api_factory=_client(hub, seen))
    assert "brightrun admin set-hub" in str(e.value) and TOKEN not in str(e.value)
    _allow(settings, ALICE, "alice", "acme-research")
    with pytest.raises(Forbidden, match="you may push only to acme-research, alice"):
        export.push_to_hub(ALICE, settings, version, "acme/bot", api_factory=_client(hub, seen))
    assert not hub.requests and not seen  # nothing reached the Hub
    export.push_to_hub(
        ALICE, settings, version, "acme-research/bot", api_factory=_client(hub, seen)
    )
    assert seen == [TOKEN] and "acme-research/bot" in hub.files


def test_a_members_own_token_pushes_where_it_can_and_is_never_stored(
    settings: Settings, version: str, hub: HubFake
) -> None:
    own = "hf_own_token_of_alice_9f3"
    seen: list[str] = []
    export.push_to_hub(
        ALICE, settings, version, "acme/bot", api_factory=_client(hub, seen), token=own
    )
    assert seen == [own]
    with db.session_scope(settings) as s:
        v = repo.get_version(ALICE, s, version)
        assert own not in json.dumps(v.settings) + json.dumps(v.eval_scores)
        assert repo.ensure_user(ALICE, s).hub_namespaces is None


def test_admins_push_wherever_the_deployments_token_can(
    settings: Settings, version: str, hub: HubFake
) -> None:
    settings = settings.model_copy(update={"hf_token": SecretStr(TOKEN)})
    with db.session_scope(settings) as s:
        v = repo.get_version(ALICE, s, version)
    # an admin pushing their own version: the admin's namespace list does not apply
    admin_alice = Actor(user_id=ALICE.user_id, email=ALICE.email, role="admin")
    seen: list[str] = []
    export.push_to_hub(admin_alice, settings, v.id, "acme/bot", api_factory=_client(hub, seen))
    assert seen == [TOKEN]


def test_a_merge_pushed_by_the_worker_keeps_to_the_same_namespaces(
    settings: Settings, version: str
) -> None:
    with db.session_scope(settings) as s:
        before = len(repo.list_jobs(ALICE, s))
    with pytest.raises(Forbidden, match="no namespace is allowed for you"):
        export.merge(ALICE, settings, version, hub_repo="acme/merged")
    with db.session_scope(settings) as s:
        assert len(repo.list_jobs(ALICE, s)) == before  # refused before a job was launched


def test_hub_namespaces_are_checked_and_set_by_admins_only(settings: Settings) -> None:
    from core import admin

    with db.session_scope(settings) as s:
        repo.ensure_user(ALICE, s)
        repo.ensure_user(ADMIN, s)
        with pytest.raises(InvalidInput, match="not a Hugging Face user or organisation"):
            admin.set_hub_namespaces(ADMIN, s, "alice", ["acme/bot"])
        with pytest.raises(Forbidden):
            admin.set_hub_namespaces(ALICE, s, "alice", ["alice"])
        u = admin.set_hub_namespaces(ADMIN, s, "alice", [" b ", "a", "a"])
        assert u.hub_namespaces == "a,b"
        assert admin.set_hub_namespaces(ADMIN, s, "alice", []).hub_namespaces is None


def test_merge_plan_memory_and_cost_per_gpu() -> None:
    seven = planner.describe("Qwen/Qwen2.5-7B-Instruct")
    plan = export.plan_merge(seven, gpus=["H100_80GB_PCIE", "A40_48GB"], adapter_bytes=80 * 2**20)
    assert plan.weights_bytes == seven.params.total * 2
    assert plan.weights_bytes < plan.need_bytes < plan.weights_bytes * 1.2 + 2**31
    assert [v["verdict"] for v in plan.verdicts] == ["fits", "fits"]
    assert 0 < plan.costs[0]["usd_low"] < plan.costs[0]["usd_high"]
    big = planner.describe("Qwen/Qwen2.5-72B-Instruct")
    assert export.plan_merge(big, gpus=["H100_80GB_PCIE"]).verdicts[0]["verdict"] == "does_not_fit"
    # 72.7 B parameters in bf16 are 145 GB: more than even an H200 holds.
    assert big.params.total * 2 > 141e9
    assert export.plan_merge(big, gpus=["H200_141GB"]).verdicts[0]["verdict"] == "does_not_fit"
    fp32 = export.plan_merge(seven, gpus=["H100_80GB_PCIE"], dtype="float32")
    assert fp32.weights_bytes == 2 * plan.weights_bytes
