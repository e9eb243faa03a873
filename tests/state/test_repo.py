"""Repository behaviour a user would notice: isolation, idempotent events, versions, costs."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from core import db
from core.db import repo
from core.db.tables import JobEvent
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.settings import Settings
from core.users import LOCAL_ACTOR, SYSTEM_ACTOR, Actor

ALICE = Actor("user-alice", "alice@example.com", "member")
BOB = Actor("user-bob", "bob@example.com", "member")
ADMIN = Actor("user-admin", "admin@example.com", "admin")

SPEC = {
    "job_id": "x",
    "model": {"name_or_path": "tiny"},
    "data": {"train_url": "http://127.0.0.1:8300/files/datasets/k?exp=1&sig=SECRETSIG"},
    "output": {
        "adapter_name": "bot",
        "upload_urls": {"adapter_model.safetensors": "http://h/?sig=SECRETSIG"},
    },
}


def _dataset(actor, session, name="support"):
    return repo.create_dataset(
        actor, session, name=name, file_format="jsonl", layout="messages", rows=3, valid_rows=3
    )


def _job(actor, session, **kw):
    ds = _dataset(actor, session, name=kw.pop("ds_name", "support"))
    return repo.create_job(
        actor, session, base_model="tiny", spec=SPEC, dataset_id=ds.id, gpu_type="LOCAL_CPU", **kw
    )


def test_another_users_things_are_not_found(session):
    ds = _dataset(ALICE, session)
    job = repo.create_job(ALICE, session, base_model="tiny", spec=SPEC, dataset_id=ds.id)
    repo.append_event(ALICE, session, job.id, 0, "started", {})
    v = repo.create_adapter_version(
        ALICE, session, adapter_name="bot", base_model="tiny", job_id=job.id
    )
    repo.record_cost(ALICE, session, job_id=job.id, seconds=10, usd=0.5)

    assert repo.list_datasets(BOB, session) == []
    assert repo.list_jobs(BOB, session) == []
    assert repo.list_adapters(BOB, session) == []
    assert repo.list_versions(BOB, session) == []
    assert repo.list_cost_records(BOB, session) == []
    assert repo.month_spend(BOB, session) == 0.0
    for call in (
        lambda: repo.get_dataset(BOB, session, ds.id),
        lambda: repo.rename_dataset(BOB, session, ds.id, "mine"),
        lambda: repo.mark_dataset_deleted(BOB, session, ds.id),
        lambda: repo.get_job(BOB, session, job.id),
        lambda: repo.update_job(BOB, session, job.id, status="CANCELLED"),
        lambda: repo.request_cancel(BOB, session, job.id),
        lambda: repo.list_events(BOB, session, job.id),
        lambda: repo.append_event(BOB, session, job.id, 1, "metrics", {}),
        lambda: repo.get_adapter(BOB, session, "bot"),
        lambda: repo.get_version(BOB, session, v.id),
        lambda: repo.delete_version(BOB, session, v.id),
        lambda: repo.record_cost(BOB, session, job_id=job.id, seconds=1, usd=1),
        # Bob cannot launch on Alice's dataset or continue from her version.
        lambda: repo.create_job(BOB, session, base_model="tiny", spec=SPEC, dataset_id=ds.id),
        lambda: repo.create_job(
            BOB, session, base_model="tiny", spec=SPEC, resume_from_version_id=v.id
        ),
    ):
        with pytest.raises(NotFound):
            call()
    # Nothing of Alice's changed.
    assert repo.get_job(ALICE, session, job.id).status == "QUEUED"
    assert [e.seq for e in repo.list_events(ALICE, session, job.id)] == [0]
    assert repo.get_dataset(ALICE, session, ds.id).name == "support"
    # Bob may use the same adapter name for his own adapter.
    assert (
        repo.get_or_create_adapter(BOB, session, "bot").id
        != repo.get_adapter(ALICE, session, "bot").id
    )


def test_admin_functions_need_an_admin(session, settings: Settings):
    job = _job(ALICE, session)
    repo.record_cost(ALICE, session, job_id=job.id, seconds=100, usd=1.25, month="2026-11")
    repo.ensure_user(BOB, session)
    with pytest.raises(Forbidden):
        repo.admin_spend_by_user(ALICE, session, "2026-11")
    with pytest.raises(Forbidden):
        repo.admin_set_user_limits(ALICE, session, ALICE.user_id, monthly_budget_usd=1e6)
    with pytest.raises(Forbidden):
        repo.admin_list_unfinished_jobs(BOB, session)
    assert repo.admin_spend_by_user(ADMIN, session, "2026-11") == {
        ALICE.user_id: 1.25,
        BOB.user_id: 0.0,
    }
    # The syncer sees every unfinished job and acts on it as its owner.
    assert [j.id for j in repo.admin_list_unfinished_jobs(SYSTEM_ACTOR, session)] == [job.id]
    owner = repo.admin_actor_for(SYSTEM_ACTOR, session, job.owner_id)
    assert owner == ALICE
    repo.update_job(owner, session, job.id, status="IN_PROGRESS")


def test_limits_default_to_settings_until_an_admin_sets_them(session, settings: Settings):
    assert repo.user_limits(ALICE, session, settings) == repo.Limits(
        settings.monthly_budget_usd, settings.max_concurrent_jobs
    )
    repo.admin_set_user_limits(
        ADMIN, session, ALICE.user_id, monthly_budget_usd=5.0, max_concurrent_jobs=1
    )
    assert repo.user_limits(ALICE, session, settings) == repo.Limits(5.0, 1)
    assert (
        repo.user_limits(BOB, session, settings).monthly_budget_usd == settings.monthly_budget_usd
    )
    repo.admin_set_user_limits(ADMIN, session, ALICE.user_id, monthly_budget_usd=None)
    assert repo.user_limits(ALICE, session, settings) == repo.Limits(settings.monthly_budget_usd, 1)


def test_sign_in_keeps_the_stored_role(session):
    actor = repo.sign_in_actor(session, "u-1", "one@example.com")
    assert actor.role == "member"
    repo.admin_set_role(ADMIN, session, "u-1", "admin")
    assert repo.sign_in_actor(session, "u-1", "new@example.com") == Actor(
        "u-1", "new@example.com", "admin"
    )


def test_events_are_idempotent_by_sequence_number(session):
    job = _job(ALICE, session)
    assert repo.append_event(ALICE, session, job.id, 0, "started", {"a": 1}, ts=1.0)
    assert repo.append_event(ALICE, session, job.id, 2, "metrics", {"loss": 2.0}, ts=3.0)
    assert not repo.append_event(ALICE, session, job.id, 2, "metrics", {"loss": 999.0}, ts=9.0)
    assert repo.missing_seqs(ALICE, session, job.id) == [1]
    assert (
        repo.append_events(
            ALICE,
            session,
            job.id,
            [
                {"seq": 1, "type": "metrics", "data": {"loss": 2.5}, "ts": 2.0},
                {"seq": 2, "type": "metrics", "data": {"loss": 0.0}, "ts": 2.0},
            ],
        )
        == 1
    )
    events = repo.list_events(ALICE, session, job.id)
    assert [(e.seq, e.data) for e in events] == [
        (0, {"a": 1}),
        (1, {"loss": 2.5}),
        (2, {"loss": 2.0}),
    ]
    assert repo.get_job(ALICE, session, job.id).last_seq == 2
    assert [
        e.seq for e in repo.list_events(ALICE, session, job.id, after_seq=0, types=["metrics"])
    ] == [1, 2]
    with pytest.raises(InvalidInput):
        repo.append_event(ALICE, session, job.id, -1, "metrics", {})


def test_concurrent_syncers_store_each_event_once(settings: Settings):
    with db.session_scope(settings) as s:
        job_id = _job(ALICE, s).id
    errors: list[BaseException] = []

    def sync(offset: int) -> None:
        try:
            for seq in range(offset, offset + 40):
                with db.session_scope(settings) as s:
                    repo.append_event(ALICE, s, job_id, seq % 40, "metrics", {"by": offset})
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=sync, args=(k * 7,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session_scope(settings) as s:
        seqs = s.execute(select(JobEvent.seq).where(JobEvent.job_id == job_id)).scalars().all()
        assert sorted(seqs) == list(range(40))
        assert repo.get_job(ALICE, s, job_id).last_seq == 39


def test_a_finished_job_is_not_reopened_by_a_stale_status(session):
    job = _job(ALICE, session)
    repo.update_job(ALICE, session, job.id, status="COMPLETED", finished_at=dt.datetime.now(dt.UTC))
    with pytest.raises(Conflict):
        repo.update_job(ALICE, session, job.id, status="IN_PROGRESS")
    assert repo.get_job(ALICE, session, job.id).status == "COMPLETED"
    repo.update_job(ALICE, session, job.id, status="IN_QUEUE", reopen=True)
    with pytest.raises(InvalidInput):
        repo.update_job(ALICE, session, job.id, owner_id=BOB.user_id)
    with pytest.raises(InvalidInput):
        repo.update_job(ALICE, session, job.id, status="DONE")


def test_signed_urls_never_reach_the_database(session):
    job = _job(ALICE, session)
    stored = repo.get_job(ALICE, session, job.id).spec
    assert "SECRETSIG" not in repr(stored)
    assert stored["output"]["upload_urls"] == {"adapter_model.safetensors": "<signed url>"}
    assert stored["model"] == {"name_or_path": "tiny"}


def test_times_come_back_timezone_aware(settings: Settings):
    with db.session_scope(settings) as s:
        job_id = _job(ALICE, s).id
    with db.session_scope(settings) as s:
        created = repo.get_job(ALICE, s, job_id).created_at
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 3600


def test_dataset_names_are_unique_per_user_and_busy_datasets_stay(session):
    ds = _dataset(ALICE, session)
    with pytest.raises(Conflict):
        _dataset(ALICE, session)
    _dataset(BOB, session)  # another user's namespace
    other = _dataset(ALICE, session, name="other")
    with pytest.raises(Conflict):
        repo.rename_dataset(ALICE, session, other.id, "support")
    with pytest.raises(InvalidInput):
        repo.rename_dataset(ALICE, session, other.id, "bad\x00name")
    job = repo.create_job(ALICE, session, base_model="tiny", spec=SPEC, dataset_id=ds.id)
    with pytest.raises(Conflict):
        repo.mark_dataset_deleted(ALICE, session, ds.id)
    repo.update_job(ALICE, session, job.id, status="FAILED")
    repo.mark_dataset_deleted(ALICE, session, ds.id)
    assert [d.name for d in repo.list_datasets(ALICE, session)] == ["other"]
    with pytest.raises(NotFound):
        repo.get_dataset(ALICE, session, ds.id)
    assert repo.get_dataset(ALICE, session, ds.id, include_deleted=True).deleted_at is not None
    _dataset(ALICE, session)  # the name is free again


def test_versions_checkpoints_promotion_and_lineage(session):
    j1 = _job(ALICE, session, ds_name="d1")
    v1 = repo.create_adapter_version(
        ALICE, session, adapter_name="bot", base_model="tiny", job_id=j1.id, final_loss=1.5
    )
    assert (
        repo.create_adapter_version(
            ALICE, session, adapter_name="bot", base_model="tiny", job_id=j1.id
        ).id
        == v1.id
    )
    j2 = _job(ALICE, session, ds_name="d2", resume_from_version_id=v1.id)
    ck = repo.create_adapter_version(
        ALICE,
        session,
        adapter_name="bot",
        base_model="tiny",
        job_id=j2.id,
        is_checkpoint=True,
        step=400,
        parent_version_id=v1.id,
    )
    assert ck.version is None
    v2 = repo.create_adapter_version(
        ALICE, session, adapter_name="bot", base_model="tiny", job_id=j2.id, parent_version_id=v1.id
    )
    assert (v1.version, v2.version) == (1, 2)
    assert repo.promote_checkpoint(ALICE, session, ck.id).version == 3
    assert repo.promote_checkpoint(ALICE, session, ck.id).version == 3
    assert [v.version for v in repo.list_versions(ALICE, session, "bot")] == [1, 2, 3]
    assert repo.latest_version(ALICE, session, "bot").id == ck.id
    assert [v.id for v in repo.version_lineage(ALICE, session, v2.id)] == [v2.id, v1.id]
    repo.delete_version(ALICE, session, v2.id)
    v4 = repo.create_adapter_version(ALICE, session, adapter_name="bot", base_model="tiny")
    assert v4.version == 4  # a deleted version's number is not reused
    assert repo.get_version_by_number(ALICE, session, "bot", 1).id == v1.id
    repo.update_version(ALICE, session, v1.id, eval_scores={"rougeL": 0.5})
    assert repo.get_version(ALICE, session, v1.id).eval_scores == {"rougeL": 0.5}
    with pytest.raises(InvalidInput):
        repo.create_adapter_version(ALICE, session, adapter_name="../etc", base_model="tiny")


def test_concurrent_registrations_get_distinct_version_numbers(settings: Settings):
    with db.session_scope(settings) as s:
        repo.get_or_create_adapter(ALICE, s, "bot")
    numbers: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            for _ in range(5):
                with db.session_scope(settings) as s:
                    v = repo.create_adapter_version(ALICE, s, adapter_name="bot", base_model="tiny")
                    numbers.append(v.version)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=register) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(numbers) == list(range(1, 16))


def test_costs_per_job_attempt_month_and_gpu(session):
    job = _job(ALICE, session)
    repo.record_cost(ALICE, session, job_id=job.id, seconds=100, usd=1.0, month="2025-10")
    repo.record_cost(
        ALICE, session, job_id=job.id, seconds=200, usd=2.0, month="2025-10"
    )  # replaces
    repo.record_cost(
        ALICE,
        session,
        job_id=job.id,
        attempt=1,
        seconds=50,
        usd=0.5,
        month="2025-11",
        gpu_type="A40_48GB",
    )
    assert repo.spend_by(ALICE, session, "month") == {"2025-10": 2.0, "2025-11": 0.5}
    assert repo.spend_by(ALICE, session, "gpu_type") == {"A40_48GB": 0.5, "LOCAL_CPU": 2.0}
    assert repo.month_spend(ALICE, session, "2025-10") == 2.0
    # A running job counts toward this month's spend with its live cost.
    live = _job(ALICE, session, ds_name="d-live")
    repo.update_job(ALICE, session, live.id, status="IN_PROGRESS", cost_usd=0.25)
    assert repo.month_spend(ALICE, session) == pytest.approx(0.25)
    assert repo.count_active_jobs(ALICE, session) == 2
    with pytest.raises(InvalidInput):
        repo.month_spend(ALICE, session, "2026-13")


def test_local_actor_works_without_setup(session):
    ds = _dataset(LOCAL_ACTOR, session)
    assert repo.get_dataset(LOCAL_ACTOR, session, ds.id).owner_id == "local"


def test_a_failed_unit_of_work_leaves_nothing_even_after_a_savepoint(settings: Settings):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.session_scope(settings) as s:
        repo.create_job(ALICE, s, base_model="tiny", spec=SPEC)  # releases a savepoint
        repo.create_adapter_version(ALICE, s, adapter_name="bot", base_model="tiny")
        raise Boom
    with db.session_scope(settings) as s:
        assert repo.list_jobs(ALICE, s) == []
        assert repo.list_versions(ALICE, s) == []
