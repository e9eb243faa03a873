"""A job on several GPUs from the controller's side: `gpus` reaches the worker's spec, the
job is billed for every GPU (its rate, so its live and billed cost, and the time its
budget buys), and a relaunch keeps the count."""

from __future__ import annotations

import pytest

from core import jobs
from core.errors import InvalidInput
from core.users import LOCAL_ACTOR
from tests.jobs.test_launch_again import _end, _launch, _sent, fake, world  # noqa: F401

pytestmark = pytest.mark.slow


def test_two_gpu_job_is_sent_with_its_count_billed_twice_and_relaunched_alike(world) -> None:  # noqa: F811
    f, plain = world[0], world[1]
    with pytest.raises(InvalidInput, match="--gpu-count 2"):  # no endpoint with 2 GPUs yet
        _launch(world, "sft", gpus=2)
    urls = {"2": plain.gpu_cluster_api_url}  # as `brightrun deploy --gpu-count 2` writes it
    settings = plain.model_copy(update={"gpu_cluster_api_urls": urls})
    world = (f, settings, *world[2:])
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
    assert two.result["endpoint_url"] == urls["2"]
