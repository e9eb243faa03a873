"""A launch rebuilt from a stored spec keeps the method and its settings: relaunch, the
out-of-memory relaunch, retry and continued training of SFT, DPO and ORPO jobs, checked
on what each sends to the endpoint (the scripted RunPod fake: fast, no training)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from core import adapters, db, jobs
from core.db import repo
from core.db.tables import Dataset
from core.jobs.again import request_for_job, request_from_spec
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs.conftest import wait_until
from tests.jobs.helpers import add_dataset
from tests.jobs.runpod_fake import RunPodFake, ServedFake

TRAINING = {"max_steps": 5, "micro_batch_size": 4, "grad_accum": 2, "max_length": 128}
METHODS = {  # each method's settings, away from their defaults
    "sft": None,
    "dpo": {"beta": 0.25, "loss_type": "hinge"},
    "orpo": {"orpo_lambda": 0.3},
}


def _failed(kind: str) -> dict[str, Any]:
    return {
        "type": "failed",
        "data": {"kind": kind, "message": f"{kind} happened", "suggestion": "micro_batch_size 2"},
    }


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[RunPodFake, str]]:
    f = RunPodFake(api_key="fake-key", queue_s=0.05)
    with ServedFake(f) as served:
        yield f, served.url


@pytest.fixture
def world(fake, tmp_path: Path) -> Iterator[tuple[RunPodFake, Settings, dict[str, str], str]]:
    from trainer.shared.tiny import build_tiny_chat_model

    f, url = fake
    f.script, f.faults[:] = None, []
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        gpu_cluster_api_url=url,
        gpu_cluster_api_key="fake-key",
        max_concurrent_jobs=8,
        monthly_budget_usd=100.0,
        model_dirs=[tmp_path],
    )
    db.upgrade(settings)
    model = str(build_tiny_chat_model(tmp_path / "tiny", seed=0))
    chat = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(8)
    ]
    pairs = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(8)]
    datasets = {"sft": add_dataset(settings, LOCAL_ACTOR, chat, name="chat")}
    datasets["pairs"] = add_dataset(settings, LOCAL_ACTOR, pairs, name="pairs")
    with db.session_scope(settings) as s:  # add_dataset records chat rows' layout
        s.execute(
            update(Dataset).where(Dataset.id == datasets["pairs"]).values(layout="preference")
        )
    yield f, settings, datasets, model
    db.dispose_engines()


def _launch(world, method: str, **kw: Any):
    f, settings, datasets, model = world
    return jobs.submit(
        LOCAL_ACTOR,
        settings,
        dataset_id=datasets["sft" if method == "sft" else "pairs"],
        model=model,
        training=TRAINING,
        quantization="none",
        budget_usd=5.0,
        method=method,
        preference=METHODS[method],
        **kw,
    )


def _sent(f: RunPodFake, job) -> dict[str, Any]:
    """What the job's last send put in `/run`'s input."""
    return f.jobs[job.runpod_job_id].input


def _end(settings: Settings, job_id: str):
    return wait_until(
        lambda: (
            (j := jobs.sync(LOCAL_ACTOR, settings, job_id)).status in ("FAILED", "COMPLETED") and j
        ),
        timeout_s=30,
        what="the job to end",
    )


def _assert_same_method(sent: dict[str, Any], first: dict[str, Any], method: str) -> None:
    assert sent["method"] == first["method"] == method
    assert sent["preference"] == first["preference"]
    if METHODS[method]:  # the settings given, not the method's defaults
        assert METHODS[method].items() <= sent["preference"].items()
    else:
        assert sent["preference"] is None


@pytest.mark.parametrize("method", list(METHODS))
def test_relaunch_keeps_the_method_and_its_settings(world, method: str) -> None:
    f = world[0]
    f.script = lambda inp: {"chunks": 1, "final": _failed("diverged")}
    job = _launch(world, method)
    first = _sent(f, job)
    job = _end(world[1], job.id)
    child = jobs.relaunch(LOCAL_ACTOR, world[1], job.id)
    sent = _sent(f, child)
    _assert_same_method(sent, first, method)
    assert sent["training"]["learning_rate"] == pytest.approx(
        first["training"]["learning_rate"] / 3
    )  # what the relaunch changes after a divergence, and only that
    assert child.parent_job_id == job.id


@pytest.mark.parametrize("method", list(METHODS))
def test_out_of_memory_relaunch_keeps_the_method_and_its_settings(world, method: str) -> None:
    f = world[0]
    f.script = lambda inp: {"chunks": 1, "final": _failed("out_of_memory")}
    job = _launch(world, method)
    first = _sent(f, job)
    _end(world[1], job.id)
    child = jobs.relaunch_after_oom(LOCAL_ACTOR, world[1], job.id)
    assert child is not None
    sent = _sent(f, child)
    _assert_same_method(sent, first, method)
    assert (first["quantization"], sent["quantization"]) == ("none", "nf4")  # lighter


@pytest.mark.parametrize("method", list(METHODS))
def test_retry_keeps_the_method_and_its_settings(world, method: str) -> None:
    f = world[0]
    f.script = lambda inp: {"chunks": 2, "raise": "worker crashed"}
    job = _launch(world, method)
    first = _sent(f, job)
    _end(world[1], job.id)
    again = jobs.retry(LOCAL_ACTOR, world[1], job.id)
    sent = _sent(f, again)
    _assert_same_method(sent, first, method)
    assert sent["first_seq"] == 2
    unchanged = ("lora", "quantization", "model", "device", "resume_from")
    assert {k: sent[k] for k in unchanged} == {k: first[k] for k in unchanged}


def _version_of(world, method: str) -> tuple[str, dict[str, Any]]:
    """A ready version trained with `method` (registered as a completed job would be)."""
    f = world[0]
    f.script = lambda inp: {"chunks": 1}
    job = _launch(world, method)
    first = _sent(f, job)
    with db.session_scope(world[1]) as s:
        stored = repo.get_job(LOCAL_ACTOR, s, job.id)
        v = repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name=stored.adapter_name,
            base_model=stored.base_model,
            job_id=job.id,
            dataset_id=stored.dataset_id,
            settings=adapters._job_settings(stored),
            volume_path="/runpod-volume/adapters/x",
        )
        return v.id, first


@pytest.mark.parametrize("method", list(METHODS))
def test_continued_training_keeps_the_method_and_a_relaunch_the_version(world, method: str) -> None:
    f, settings = world[0], world[1]
    version_id, first = _version_of(world, method)
    f.script = lambda inp: {"chunks": 1, "final": _failed("diverged")}
    cont = jobs.continue_training(LOCAL_ACTOR, settings, version_id)
    sent = _sent(f, cont)
    _assert_same_method(sent, first, method)
    assert sent["resume_from"] == "/runpod-volume/adapters/x"
    assert cont.resume_from_version_id == version_id
    # Relaunched after a failure, it still continues the version, with the same method.
    _end(settings, cont.id)
    child = jobs.relaunch(LOCAL_ACTOR, settings, cont.id)
    _assert_same_method(_sent(f, child), first, method)
    assert child.resume_from_version_id == version_id
    assert _sent(f, child)["resume_from"] == "/runpod-volume/adapters/x"


def test_continued_training_with_another_method_takes_that_methods_settings(world) -> None:
    f, settings, datasets, _ = world
    version_id, _ = _version_of(world, "sft")
    cont = jobs.continue_training(
        LOCAL_ACTOR, settings, version_id, dataset_id=datasets["pairs"], method="dpo"
    )
    assert _sent(f, cont)["method"] == "dpo"
    assert _sent(f, cont)["preference"] is None  # DPO's defaults: nothing carried over


def test_a_rebuilt_launch_missing_a_field_is_refused(world) -> None:
    """Every `LaunchRequest` field comes from the stored spec or the caller: one neither
    gives (a field added to `LaunchRequest` later, say) is an error, not a default."""
    f = world[0]
    f.script = lambda inp: {"chunks": 1}
    job = _launch(world, "dpo")
    with db.session_scope(world[1]) as s:
        stored = repo.get_job(LOCAL_ACTOR, s, job.id)
    request = request_for_job(stored)
    assert request.method == "dpo" and request.preference["beta"] == 0.25
    with pytest.raises(TypeError, match="lacks adapter_name, budget_usd, dataset_id"):
        request_from_spec(stored.spec, model=stored.base_model)
