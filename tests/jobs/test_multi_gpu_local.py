"""A 2-GPU job through the real local endpoint (the real handler, tiny model, CPU): two
trainer processes under torchrun (gloo), synced until it ends. Its events arrive once
each (rank 0 alone reports), the adapter is delivered, and it is billed for two GPUs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import jobs
from core.users import LOCAL_ACTOR
from tests.jobs.conftest import wait_until
from tests.jobs.stack import Stack, assert_whole_history, make_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(Path(tmp_path_factory.mktemp("gpus")), workers=1)


def test_a_two_gpu_job_on_the_local_endpoint_reports_once_and_costs_double(stack: Stack) -> None:
    job = stack.submit(gpus=2, training={**stack.training, "grad_accum": 2})
    job = stack.wait_end(job.id, timeout_s=300)
    assert job.status == "COMPLETED", [e.data for e in stack.events(job.id)][-1:]
    evs = assert_whole_history(stack, job.id)
    assert [e.type for e in evs].count("started") == 1
    assert [e.type for e in evs].count("completed") == 1
    started = next(e for e in evs if e.type == "started")
    assert started.data["model"]["gpus"] == 2
    assert started.data["model"]["sharding"] == "ddp"  # the tiny base is replicated
    steps = [e.data["step"] for e in evs if e.type == "metrics"]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # each step reported once
    one_gpu = jobs.pricing_for(stack.settings).rate_per_s
    assert job.rate_per_s == pytest.approx(2 * one_gpu)
    assert job.cost_usd and job.cost_usd > 0


def _rank_processes(job_id: str) -> list[int]:
    """Live processes of the job's ranks or its torchrun (their command lines name it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if f"brightrun-{job_id}-gpus-".encode() in cmd and state != "Z":
            found.append(int(proc.name))
    return found


def test_cancelling_a_two_gpu_job_leaves_no_process_behind(stack: Stack) -> None:
    job = stack.submit(gpus=2, training={**stack.training, "max_steps": 400})
    wait_until(
        lambda: any(e.type == "metrics" for e in stack.events(stack.sync(job.id).id)),
        timeout_s=180,
        what="the job's first step",
    )
    assert len(_rank_processes(job.id)) >= 3  # torchrun and its two ranks
    jobs.cancel(LOCAL_ACTOR, stack.settings, job.id)
    job = stack.wait_end(job.id, timeout_s=60)
    assert job.status == "CANCELLED"
    wait_until(lambda: not _rank_processes(job.id), timeout_s=20, what="the ranks to end")
