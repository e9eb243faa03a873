"""Folder paths reach admins only: a base model served from a folder on the server (vLLM
serves `--model /runpod-volume/models/...` under that path) is shown to a member by the
folder's name alone, in the Playground (labels, reasons, the adapter's load detail, the
export) and in `brightrun chat --list`; an admin sees the path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core import db
from core.clients.inference import InferenceRouter, model_choice_set
from core.clients.inference.types import AdapterAvailability, LoadMode, ServedModel
from core.db import repo
from core.settings import Settings, load_settings
from core.users import LOCAL_ACTOR, Actor
from tests.conftest import ROOT

FOLDER = "/runpod-volume/models"
BASE = f"{FOLDER}/Qwen3-4B"
MEMBER = Actor(user_id="u-member", email="m@example.com", role="member")


class StubServer:
    """The inference client's calls the choices make, answering for a base in a folder."""

    url = "http://inference.test/v1"

    def models(self) -> list[ServedModel]:
        return [ServedModel(BASE, root=BASE)]

    def ensure_adapter(self, name: str, path: str | None = None) -> AdapterAvailability:
        return AdapterAvailability(
            name, LoadMode.RESOLVER, f"left to the server's filesystem resolver, which loads {path}"
        )

    def close(self) -> None:
        pass


def _router(settings: Settings, **_: Any) -> InferenceRouter:
    return InferenceRouter(settings, default=StubServer())  # type: ignore[arg-type]


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    s = load_settings()
    db.upgrade(s)
    with db.session_scope(s) as session:
        for actor in (LOCAL_ACTOR, MEMBER):
            repo.ensure_user(actor, session)
            for trained_on, name in ((BASE, "bot"), (f"{FOLDER}/Other-7B", "other")):
                repo.create_adapter_version(
                    actor,
                    session,
                    adapter_name=name,
                    base_model=trained_on,
                    volume_path=f"{FOLDER}/../adapters/{name}-{actor.user_id}",
                )
    return s


def _choices(settings: Settings, actor: Actor) -> Any:
    with db.session_scope(settings) as session:
        return model_choice_set(actor, session, settings, _router(settings))


def test_a_member_reads_the_base_by_its_folder_name_and_an_admin_by_its_path(
    settings: Settings,
) -> None:
    member = _choices(settings, MEMBER)
    assert [c.label for c in member.available] == ["Qwen3-4B (base)", "bot v1"]
    assert member.available[0].name == "Qwen3-4B"
    assert member.available[0].served_name == BASE  # requests still name what the server serves
    (unserved,) = member.unserved
    assert unserved.reason.startswith("trained on Other-7B, which no inference endpoint serves")
    assert FOLDER not in repr([(c.label, c.name) for c in member.available]) + unserved.reason

    admin = _choices(settings, LOCAL_ACTOR)
    assert admin.available[0].label == f"{BASE} (base)" and admin.available[0].name == BASE
    assert f"trained on {FOLDER}/Other-7B" in admin.unserved[0].reason


@pytest.mark.parametrize(("actor", "sees_folders"), [(MEMBER, False), (LOCAL_ACTOR, True)])
def test_chat_list_and_its_load_detail(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, actor: Actor, sees_folders: bool
) -> None:
    import cli.auth
    import core.clients.inference as inference
    from cli import app

    monkeypatch.setattr(cli.auth, "acting_user", lambda _: actor)
    monkeypatch.setattr(inference, "InferenceRouter", _router)
    listed = CliRunner().invoke(app, ["chat", "--list"])
    assert listed.exit_code == 0, listed.output
    assert (FOLDER in listed.output) is sees_folders, listed.output
    assert "Qwen3-4B (base)" in listed.output and "bot v1" in listed.output

    monkeypatch.setattr(InferenceRouter, "stream_chat", _answer)
    out = Path("chat.jsonl")
    said = CliRunner().invoke(
        app, ["chat", "hi", "--base", "--adapter", "bot", "--export", str(out)]
    )
    loaded = said.output  # the "[bot v1: ...]" line goes to stderr, mixed in here
    assert "bot v1:" in loaded and (FOLDER in loaded) is sees_folders, loaded
    models = [json.loads(line)["model"] for line in out.read_text().splitlines()]
    assert (BASE in models) is sees_folders and len(models) == 2


class _Answer(list):
    finish_reason = "stop"


def _answer(self: Any, model: str, messages: Any, sampling: Any) -> _Answer:
    return _Answer(["Hello."])


def test_the_playground_shows_a_member_no_folder(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    import components.chat
    import components.session

    for actor, sees_folders in ((MEMBER, False), (LOCAL_ACTOR, True)):
        monkeypatch.setattr(components.session, "actor", lambda a=actor: a)
        monkeypatch.setattr(components.chat, "inference_client", _router)
        at = AppTest.from_file(str(ROOT / "app_pages" / "playground.py"), default_timeout=60)
        at.run()
        at.multiselect(key="playground.models").set_value(
            ["Qwen3-4B (base)" if not sees_folders else f"{BASE} (base)", "bot v1"]
        ).run()
        assert not at.exception, at.exception
        page = repr(at._tree)
        assert (FOLDER in page) is sees_folders, actor.role
        assert "bot v1" in page
