"""Jobs end to end: the local endpoint as a real process running the real trainer handler on a
tiny model (CPU), the controller (`core.jobs`) talking to it through the RunPod client,
state in SQLite, files in the local store behind signed URLs.

Each job trains a few steps; the budget test trains for the half minute its budget allows.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from core import db, jobs, planner
from core.clients.runpod import JobNotFound, RunPodClient
from core.clients.storage import job_prefix, make_blob_store
from core.db import repo
from core.db.tables import TERMINAL_STATUSES, utcnow
from core.jobs.sync import PULL_LEASE_S
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs import stack as stack_module
from tests.jobs.conftest import ENDPOINT_KEY, start_endpoint, wait_until
from tests.jobs.stack import LORA, Stack, make_stack

pytestmark = pytest.mark.slow

RETENTION_S = 6.0
TRAINING = {**stack_module.TRAINING, "max_steps": 8, "checkpoint_every": 4}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(
        tmp_path_factory.mktemp("jobs"),
        retention_s=RETENTION_S,
        max_concurrent_jobs=4,
        training=TRAINING,
    )


@dataclass
class StuckJob:
    settings: Settings
    job_id: str
    budget_usd: float


@pytest.fixture(scope="module", autouse=True)
def stuck_job(stack: Stack) -> Iterator[StuckJob]:
    """A job on a second endpoint whose worker hangs, submitted when the module starts so
    that its one-minute platform timeout runs out while the other tests train."""
    ep = start_endpoint(stack.settings.data_dir, handler="tests.jobs.fakes:stuck_trainer")
    settings = stack.settings.model_copy(
        update={"gpu_cluster_api_url": ep.url, "public_base_url": ep.base}
    )
    budget = 60 * planner.rate_per_second(settings.gpu_type, settings.price_tier) * 1.0001
    job = jobs.submit(
        LOCAL_ACTOR,
        settings,
        dataset_id=stack.dataset_id,
        model=str(stack.model),
        lora=LORA,
        training=TRAINING,
        quantization="none",
        budget_usd=budget,
    )
    try:
        yield StuckJob(settings, job.id, budget)
    finally:
        ep.stop()


def final_versions(session, job_id: str) -> list:
    """The adapter versions a job registered as its result (checkpoints left out)."""
    return [
        v for v in repo.list_versions(LOCAL_ACTOR, session, job_id=job_id) if not v.is_checkpoint
    ]


def assert_complete_history(stack: Stack, job_id: str) -> list:
    evs = stack.events(job_id)
    assert [e.seq for e in evs] == list(range(len(evs))), "events missing from the history"
    assert evs[0].type == "started" and evs[-1].type == "completed"
    assert sum(e.type == "metrics" for e in evs) >= TRAINING["max_steps"]
    return evs


def test_job_runs_queue_progress_complete_with_live_metrics_adapter_and_cost(stack: Stack) -> None:
    job = stack.submit()
    assert job.status == "IN_QUEUE" and job.runpod_job_id
    seen = [job.status]
    metrics_while_running = 0

    def step() -> bool:
        nonlocal metrics_while_running
        # Two sessions syncing the same job at once must not duplicate or lose anything.
        threads = [threading.Thread(target=stack.sync, args=(job.id,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        j = jobs.get(LOCAL_ACTOR, stack.settings, job.id)
        if seen[-1] != j.status:
            seen.append(j.status)
        if j.status == "IN_PROGRESS":
            metrics_while_running = max(
                metrics_while_running,
                len(jobs.events(LOCAL_ACTOR, stack.settings, job.id, types=["metrics"])),
            )
        return j.status in TERMINAL_STATUSES

    wait_until(step, timeout_s=240, every_s=0.2, what="the job to finish")
    job = jobs.get(LOCAL_ACTOR, stack.settings, job.id)
    assert seen[0] == "IN_QUEUE" and "IN_PROGRESS" in seen and seen[-1] == "COMPLETED", seen
    assert metrics_while_running > 0, "no metrics event arrived while the job was running"
    evs = assert_complete_history(stack, job.id)
    assert job.step == job.total_steps == TRAINING["max_steps"] and job.progress == 1.0
    losses = [e.data["loss"] for e in evs if e.type == "metrics"]
    assert job.final_loss == losses[-1] < losses[0]

    # Billed: executionTime (plus any boot this job caused) at the configured GPU's rate.
    rate = planner.rate_per_second(stack.settings.gpu_type, stack.settings.price_tier)
    assert job.gpu_type == "LOCAL_CPU" and job.rate_per_s == pytest.approx(rate)
    assert job.billed_s >= job.execution_ms / 1000
    assert job.cost_usd == pytest.approx(job.billed_s * rate) and job.cost_usd > 0
    with db.session_scope(stack.settings) as s:
        (record,) = [r for r in repo.list_cost_records(LOCAL_ACTOR, s) if r.job_id == job.id]
        assert record.usd == pytest.approx(job.cost_usd)
        (version,) = final_versions(s, job.id)
        assert version.version >= 1 and version.final_loss == job.final_loss
        prefix = version.storage_prefix

    # The stored adapter loads with PEFT onto the base model, and it was trained.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    store = make_blob_store(stack.settings)
    folder = stack.settings.data_dir / "check" / job.id
    folder.mkdir(parents=True)
    for blob in store.list("adapters", prefix):
        store.download_to("adapters", blob.key, folder / blob.key.rsplit("/", 1)[-1])
    assert json.loads((folder / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(stack.model)
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(stack.model), folder
    )
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) > 0 for p in lora_b)


def test_cancel_stops_the_worker_and_retry_resumes_from_the_checkpoint(stack: Stack) -> None:
    long = {**TRAINING, "max_steps": 100_000, "checkpoint_every": 2}
    job = stack.submit(training=long)
    wait_until(
        lambda: any(e.type == "checkpoint" for e in (stack.sync(job.id) and stack.events(job.id))),
        timeout_s=180,
        every_s=0.3,
        what="a checkpoint",
    )
    job = jobs.cancel(LOCAL_ACTOR, stack.settings, job.id)
    assert job.status == "CANCELLED" and job.stop_reason == "user"
    assert job.cost_usd > 0
    with stack.client() as c:
        wait_until(lambda: c.health().workers["running"] == 0, what="the worker to be stopped")
    checkpoint_step = max(e.data["step"] for e in stack.events(job.id) if e.type == "checkpoint")

    again = jobs.retry(LOCAL_ACTOR, stack.settings, job.id)
    assert again.id == job.id and again.attempt == 1 and again.status == "IN_QUEUE"

    def resumed() -> Any:
        stack.sync(job.id)
        starts = [e for e in stack.events(job.id) if e.type == "started"]
        return len(starts) == 2 and starts[-1]

    second_start = wait_until(resumed, timeout_s=180, every_s=0.3, what="the retried run to start")
    assert second_start.data["resumed_from_step"] >= checkpoint_step
    # The retried run continues the event numbering: one history, no gaps.
    seqs = [e.seq for e in stack.events(job.id)]
    assert seqs == list(range(len(seqs))) and second_start.seq > 0
    job = jobs.cancel(LOCAL_ACTOR, stack.settings, job.id)
    assert job.status == "CANCELLED"
    with db.session_scope(stack.settings) as s:
        attempts = sorted(
            r.attempt for r in repo.list_cost_records(LOCAL_ACTOR, s) if r.job_id == job.id
        )
    assert attempts == [0, 1]


def test_budget_cap_stops_training_and_keeps_what_it_trained(stack: Stack) -> None:
    rate = planner.rate_per_second(stack.settings.gpu_type, stack.settings.price_tier)
    budget = 60 * rate * 1.0001  # one minute of GPU: the smallest budget accepted
    limits = planner.execution_limits(budget, rate)
    job = stack.submit(
        training={**TRAINING, "max_steps": 100_000, "checkpoint_every": 5}, budget_usd=budget
    )
    assert job.spec["training"]["time_limit_s"] == pytest.approx(limits.time_limit_s)
    job = stack.wait_end(job.id)
    assert job.status == "COMPLETED" and job.stop_reason == "time_limit"
    assert 0 < job.step < 100_000
    assert 0 < job.cost_usd <= budget
    with db.session_scope(stack.settings) as s:
        (version,) = final_versions(s, job.id)
        assert version.size_bytes > 0


def test_controller_down_until_the_endpoint_forgot_the_job_history_stays_complete(
    stack: Stack,
) -> None:
    job = stack.submit()
    with stack.client() as c:
        # No sync at all while it runs, ends, and is dropped by the endpoint.
        wait_until(
            lambda: c.status(job.runpod_job_id).terminal, timeout_s=240, every_s=0.5, what="the end"
        )

        def forgotten() -> bool:
            try:
                c.status(job.runpod_job_id)
            except JobNotFound:
                return True
            return False

        wait_until(
            forgotten,
            timeout_s=RETENTION_S + 60,
            every_s=0.5,
            what="the endpoint to forget the job",
        )
    job = stack.sync(job.id)
    assert job.status == "COMPLETED"
    assert_complete_history(stack, job.id)
    assert job.cost_usd > 0 and job.billed_s > 0
    with db.session_scope(stack.settings) as s:
        assert final_versions(s, job.id)


def test_restart_and_reconcile(stack: Stack) -> None:
    # Long enough that the controller is killed mid-job: the stack's 6 steps can all be
    # pulled, end included, by the syncer's first pull on an idle machine.
    job = stack.submit(training={**stack.training, "max_steps": 60})
    stack.start_syncer(interval_s=0.5)
    try:
        wait_until(
            lambda: jobs.get(LOCAL_ACTOR, stack.settings, job.id).last_seq >= 0,
            timeout_s=180,
            every_s=0.3,
            what="the background syncer to store events",
        )
    finally:
        stack.stop_syncers()  # SIGKILL: the controller dies mid-job
    assert jobs.get(LOCAL_ACTOR, stack.settings, job.id).status not in TERMINAL_STATUSES
    with stack.client() as c:
        wait_until(
            lambda: c.status(job.runpod_job_id).terminal, timeout_s=240, every_s=0.5, what="the end"
        )
    # A controller killed mid-pull still holds the job's pull lease: until it runs out
    # (PULL_LEASE_S at most, as nothing renews it) the job is left as stored, then one
    # reconcile pass finishes every unfinished job.
    with db.session_scope(stack.settings) as s:
        lease = repo.get_job(LOCAL_ACTOR, s, job.id).pull_lease_until
    if lease is not None:
        assert lease <= utcnow() + dt.timedelta(seconds=PULL_LEASE_S)
        if (lease - utcnow()).total_seconds() > 5:
            assert jobs.reconcile(stack.settings).ended == 0
            assert jobs.get(LOCAL_ACTOR, stack.settings, job.id).status not in TERMINAL_STATUSES
        time.sleep(max(0.0, (lease - utcnow()).total_seconds()) + 0.5)
    report = jobs.reconcile(stack.settings)
    assert not report.errors and report.ended >= 1
    job = jobs.get(LOCAL_ACTOR, stack.settings, job.id)
    assert job.status == "COMPLETED"
    assert_complete_history(stack, job.id)


def test_platform_timeout_stops_a_stuck_worker_at_the_budget(stuck_job: StuckJob) -> None:
    job = wait_until(
        lambda: (
            (j := jobs.sync(LOCAL_ACTOR, stuck_job.settings, stuck_job.job_id)).status
            in TERMINAL_STATUSES
            and j
        ),
        timeout_s=180,
        every_s=0.5,
        what="the platform timeout",
    )
    assert job.status == "TIMED_OUT" and job.stop_reason == "budget"
    assert job.execution_ms >= 60_000 * 0.99
    assert 0 < job.cost_usd <= stuck_job.budget_usd * 1.02  # whole seconds, rounded up
    assert [e.type for e in jobs.events(LOCAL_ACTOR, stuck_job.settings, job.id)] == ["started"]


def test_failing_training_ends_failed_on_the_endpoint_with_its_events_kept(stack: Stack) -> None:
    """The real handler under runpod-python's worker loop: a training whose loss turns NaN
    ends FAILED on the endpoint (its console and /health agree), not COMPLETED."""
    ep = start_endpoint(
        stack.settings.data_dir,
        handler="trainer.handler:handler",
        extra_env={"LOCAL_DEVICE": "cpu", "BRIGHTRUN_FORCE_NAN_AT_STEP": "3"},
    )
    settings = stack.settings.model_copy(
        update={"gpu_cluster_api_url": ep.url, "public_base_url": ep.base}
    )
    try:
        job = jobs.submit(
            LOCAL_ACTOR,
            settings,
            dataset_id=stack.dataset_id,
            model=str(stack.model),
            lora=LORA,
            training=TRAINING,
            quantization="none",
        )
        with RunPodClient(ep.url, ENDPOINT_KEY) as c:
            wait_until(lambda: c.status(job.runpod_job_id).terminal, timeout_s=240, what="end")
            st = c.status(job.runpod_job_id)
            assert st.status == "FAILED" and st.job_error.type == "diverged"
            assert c.health().jobs["failed"] == 1
        job = jobs.sync(LOCAL_ACTOR, settings, job.id)
    finally:
        ep.stop()
    assert job.status == "FAILED" and job.failure_kind == "diverged"
    assert "step 3" in job.failure_message and "learning rate" in job.failure_suggestion
    evs = jobs.events(LOCAL_ACTOR, settings, job.id)
    assert [e.seq for e in evs] == list(range(len(evs)))
    assert [e.type for e in evs] == ["started", "metrics", "metrics", "failed"]
    uploaded = make_blob_store(settings).list("adapters", job_prefix(LOCAL_ACTOR.user_id, job.id))
    assert {"events.jsonl", "result.json"} <= {b.key.rsplit("/", 1)[-1] for b in uploaded}
