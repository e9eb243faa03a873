"""What the pages gained from the command line: push to the Hub, merge, evaluate and
continue on the Adapters page; a user's role on the Admin page; the set's export in the
playground; the Train page's LoRA targets, LoRA on the routed experts and GPU type
(components/train_options.py)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core import db
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import seed_dataset, seed_job


def _version(settings: Settings) -> str:
    ds = seed_dataset(settings)
    job = seed_job(settings, ds, adapter="support-bot")
    with db.session_scope(settings) as s:
        return repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="support-bot",
            base_model="Qwen/Qwen3-4B",
            job_id=job,
            dataset_id=ds,
        ).id


def test_the_adapters_page_pushes_merges_evaluates_and_continues(
    settings: Settings, open_page, monkeypatch
) -> None:  # noqa: F811
    monkeypatch.delenv("HF_TOKEN", raising=False)
    vid = _version(settings)
    at = open_page("adapters")
    assert at.button(key="adapters.push").disabled  # no repo yet
    at.text_input(key=f"adapters.hub_repo.{vid}").input("me/support-bot").run()
    at.button(key="adapters.push").click().run()
    assert not at.exception, at.exception
    assert any("HF_TOKEN is not set" in e.value.replace("\\", "") for e in at.error), [
        e.value for e in at.error
    ]
    for key in ("adapters.merge", "adapters.evaluate", "adapters.continue"):
        assert at.button(key=key)


def test_the_admin_page_sets_a_role(settings: Settings, open_page) -> None:  # noqa: F811
    at = open_page("admin")
    assert at.button(key="admin.save_role").disabled  # the role it has
    assert at.selectbox(key=f"admin.role.{LOCAL_ACTOR.user_id}").value == "admin"


def test_the_admin_page_sets_a_users_hub_namespaces(settings: Settings, open_page) -> None:  # noqa: F811
    at = open_page("admin")
    uid = LOCAL_ACTOR.user_id
    at.text_input(key=f"admin.hub.{uid}").input("acme, acme/x").run()
    at.button(key="admin.save_hub").click().run()
    assert any("not a Hugging Face user or organisation" in e.value for e in at.error)
    at.text_input(key=f"admin.hub.{uid}").input("acme, my-lab").run()
    at.button(key="admin.save_hub").click().run()
    assert not at.exception and not at.error
    with db.session_scope(settings) as s:
        assert repo.ensure_user(LOCAL_ACTOR, s).hub_namespaces == "acme,my-lab"


def test_the_train_options_give_lora_targets_experts_and_a_gpu(settings: Settings) -> None:
    def page() -> None:
        import streamlit as st

        from components import session, train_options

        session.init_state()
        s = session.settings()
        st.session_state["out.dense"] = train_options.lora_targets(
            "Qwen/Qwen3-4B", s.data_dir / "models"
        )
        st.session_state["out.gpu"] = train_options.gpu_type(s)

    at = AppTest.from_function(page, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.session_state["out.dense"] == {
        "target_modules": "all-linear",
        "lora_on_experts": False,
    }
    assert at.checkbox(key="train.lora_on_experts").disabled  # a dense model has no routed experts
    at.multiselect(key="train.target_modules").set_value(["q_proj", "v_proj"]).run()
    assert at.session_state["out.dense"]["target_modules"] == ["q_proj", "v_proj"]
    assert at.session_state["out.gpu"] == settings.gpu_type
    others = [o for o in at.selectbox(key="train.gpu_type").options if settings.gpu_type not in o]
    assert len(others) >= 3  # every type the planner knows
