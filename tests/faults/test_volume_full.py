"""The volume full while a job writes a checkpoint (the real trainer handler with its
checkpoint write raising ENOSPC, `tests/faults/full_volume.py`): the job ends FAILED saying
the volume is full and what to do, its history whole and its cost once; the retry, with the
space freed, resumes from the last complete checkpoint and delivers the adapter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core import jobs
from core.users import LOCAL_ACTOR
from tests.faults.conftest import Stack, assert_whole_history, make_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(
        tmp_path_factory.mktemp("faults-full"),
        workers=1,
        handler="tests.faults.full_volume:handler",
    )


def test_a_full_volume_ends_the_job_saying_so_and_the_retry_resumes(full_stack: Stack) -> None:
    stack = full_stack
    job = stack.wait_end(stack.submit().id)
    assert job.status == "FAILED" and job.failure_kind == "volume_full"
    assert "the volume is full" in job.failure_message and "optimizer.pt" in job.failure_message
    assert "free space" in job.failure_suggestion and "retry" in job.failure_suggestion
    evs = assert_whole_history(stack, job.id)
    (first_ckpt,) = [e.data["step"] for e in evs if e.type == "checkpoint"]
    assert len(stack.cost_records(job.id)) == 1 and job.cost_usd > 0

    jobs.retry(LOCAL_ACTOR, stack.settings, job.id)
    job = stack.wait_end(job.id)
    assert job.status == "COMPLETED"
    evs = assert_whole_history(stack, job.id)
    started = [e for e in evs if e.type == "started"]
    assert len(started) == 2 and started[-1].data["resumed_from_step"] == first_ckpt
    assert sorted(r.attempt for r in stack.cost_records(job.id)) == [0, 1]
