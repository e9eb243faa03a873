"""The database going away during a sync (the real PostgreSQL at 127.0.0.1:5432, a
throwaway database): every connection to it is ended with `pg_terminate_backend` again and
again while syncer processes write, which is what a server restart does to its clients
(the server itself is shared, so it is not restarted). The job still ends whole."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import psycopg
import pytest

from core import jobs
from core.users import LOCAL_ACTOR
from tests.faults.conftest import Stack, assert_whole_history, make_stack
from tests.jobs.conftest import wait_until
from tests.state.db_fixtures import PG_ADMIN_DSN, postgres_database

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with postgres_database() as url:
        yield from make_stack(tmp_path_factory.mktemp("faults-pg"), url, workers=1)


def _terminate_connections(database: str) -> int:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def test_connections_ended_during_syncs_lose_and_repeat_nothing(pg_stack: Stack) -> None:
    stack = pg_stack
    database = stack.settings.database_url.get_secret_value().rsplit("/", 1)[1]
    job = stack.submit()
    for _ in range(2):
        stack.start_syncer(interval_s=0.2)
    rng = random.Random(5)
    ended = 0
    try:
        with stack.client() as c:
            while not c.status(job.runpod_job_id).terminal:
                time.sleep(rng.uniform(0.3, 1.5))  # a random moment of the syncers' passes
                ended += _terminate_connections(database)
        wait_until(
            lambda: jobs.get(LOCAL_ACTOR, stack.settings, job.id).notified_at is not None,
            timeout_s=120,
            what="the syncers to finish the job",
        )
    finally:
        stack.stop_syncers()
    assert ended >= 1
    assert not jobs.reconcile(stack.settings).errors
    job = jobs.get(LOCAL_ACTOR, stack.settings, job.id)
    assert job.status == "COMPLETED"
    evs = assert_whole_history(stack, job.id)
    assert evs[0].type == "started" and evs[-1].type == "completed"
    (record,) = stack.cost_records(job.id)
    assert record.usd == pytest.approx(job.cost_usd)
