"""A job on several GPUs from the controller's side: `gpus` reaches the worker's spec, the
job is billed for every GPU (its rate, so its live and billed cost, and the time its
budget buys), and a relaunch keeps the count."""

from __future__ import annotations

import pytest

from core import jobs
from core.users import LOCAL_ACTOR
from tests.jobs.test_launch_again import _end, _launch, _sent, fake, world  # noqa: F401

pytestmark = pytest.mark.slow


def test_two_gpu_job_is_sent_with_its_count_billed_twice_and_relaunched_alike(world) -> None:  # noqa: F811
    f, settings = world[0], world[1]
    f.script = lambda inp: {
        "chunks": 1,
        "final": {
            "type": "failed",
            "data": {"kind": "diverged", "message": "x", "suggestion": "y"},
        },
    }
    one = _launch(world, "sft")
    two = _launch(world, "sft", gpus=2)
    assert _sent(f, two)["gpus"] == 2 and _sent(f, one)["gpus"] == 1
    assert two.rate_per_s == pytest.approx(2 * one.rate_per_s)
    assert two.budget_usd == one.budget_usd
    ended = _end(settings, two.id)
    child = jobs.relaunch(LOCAL_ACTOR, settings, ended.id)
    assert _sent(f, child)["gpus"] == 2
    assert child.rate_per_s == pytest.approx(two.rate_per_s)
    assert two.result["endpoint_url"] == settings.gpu_cluster_api_url  # loopback: any count
