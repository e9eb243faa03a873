"""What a user can chat with: their own adapter versions and checkpoints, never another
user's, and a checkpoint served while its job's other versions exist."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core import db
from core.clients.inference import InferenceClient, LoadMode, Sampling, find_choice, model_choices
from core.db import repo
from core.errors import NotFound
from core.users import LOCAL_ACTOR, Actor
from tests.inference.conftest import Server, settings_for

pytestmark = pytest.mark.slow

ALICE = Actor(user_id="alice", email="alice@example.com")
BOB = Actor(user_id="bob", email="bob@example.com")
HI = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = Sampling(temperature=0.0, max_tokens=8)


@pytest.fixture
def alice_versions(server: Server, data_dir: Path, adapters: dict[str, Path], unique_name: str):
    """Alice's `support-bot` v1 in the volume's adapter folder and a checkpoint elsewhere."""
    final = server.adapters_dir / f"{unique_name}-support-bot-v1"
    shutil.copytree(adapters["a"], final)
    ckpt = server.work / unique_name / "checkpoints" / "step-10"
    shutil.copytree(adapters["b"], ckpt)
    settings = settings_for(
        server, data_dir, auth="supabase", supabase_url="https://example.supabase.co"
    )
    db.upgrade(settings)
    with db.session_scope(settings) as s:
        for actor in (ALICE, BOB):
            repo.ensure_user(actor, s)
        v1 = repo.create_adapter_version(
            ALICE, s, adapter_name="support-bot", base_model=server.base, volume_path=str(final)
        )
        ck = repo.create_adapter_version(
            ALICE,
            s,
            adapter_name="support-bot",
            base_model=server.base,
            volume_path=str(ckpt),
            is_checkpoint=True,
            step=10,
        )
        ids = (v1.id, ck.id)
    yield settings, final, ckpt, ids
    db.dispose_engines()


def test_each_user_sees_only_their_own_adapters(server: Server, alice_versions) -> None:
    settings, final, ckpt, (_, ck_id) = alice_versions
    with InferenceClient(settings) as client, db.session_scope(settings) as s:
        alice = model_choices(ALICE, s, settings, client)
        bob = model_choices(BOB, s, settings, client)
    # Members see the served base by its folder's name, never the server's path.
    base = Path(server.base).name
    assert [c.label for c in alice] == [
        f"{base} (base)",
        "support-bot v1",
        "support-bot step 10",
    ]
    assert [c.served_name for c in alice] == [server.base, final.name, f"ckpt-{ck_id}"]
    assert [c.path for c in alice] == [None, str(final), str(ckpt)]
    # Bob sees the base only: not Alice's versions, not the folders on the shared volume.
    assert [c.label for c in bob] == [f"{base} (base)"]
    with pytest.raises(NotFound):
        find_choice(bob, "support-bot")


def test_a_checkpoint_is_loaded_at_run_time_and_answers(server: Server, alice_versions) -> None:
    settings, _, _, (_, ck_id) = alice_versions
    with InferenceClient(settings) as client, db.session_scope(settings) as s:
        choices = model_choices(ALICE, s, settings, client)
        ck = find_choice(choices, "support-bot step 10")
        assert ck.served_name == f"ckpt-{ck_id}"
        assert client.ensure_adapter(ck.served_name, ck.path).mode is LoadMode.RUNTIME
        assert (
            client.chat(ck.served_name, HI, GREEDY).text
            != client.chat(server.base, HI, GREEDY).text
        )
        client.unload_adapter(ck.served_name)


def test_find_choice_by_name_version_and_label(server: Server, alice_versions) -> None:
    settings, final, _, _ = alice_versions
    with InferenceClient(settings) as client, db.session_scope(settings) as s:
        choices = model_choices(ALICE, s, settings, client)
    assert find_choice(choices, "support-bot").served_name == final.name
    assert find_choice(choices, "support-bot", version=1).served_name == final.name
    assert find_choice(choices, "support-bot v1").served_name == final.name
    with pytest.raises(NotFound, match="version 2"):
        find_choice(choices, "support-bot", version=2)


def test_the_one_local_user_also_sees_adapter_folders(
    server: Server, data_dir: Path, adapters, unique_name
) -> None:
    shutil.copytree(adapters["a"], server.adapters_dir / unique_name)
    settings = settings_for(server, data_dir)
    with InferenceClient(settings) as client:
        choices = model_choices(LOCAL_ACTOR, None, settings, client)
    assert unique_name in [c.served_name for c in choices]
    assert find_choice(choices, unique_name).path == str(server.adapters_dir / unique_name)
