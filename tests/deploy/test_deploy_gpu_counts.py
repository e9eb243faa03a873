"""`brightrun deploy --gpu-count N`: one trainer endpoint per GPU count in use, its workers
given that many GPUs (`gpu.count`), created through the stand-in that holds every request
and answer to RunPod's published contract; idempotent; GPU_CLUSTER_API_URLS in .env maps
each count to its endpoint, and a multi-GPU job goes there (or is refused with the deploy
command when no endpoint has its count)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.deploy import DeployConfig
from core.errors import InvalidInput
from core.jobs.pricing import trainer_endpoint
from core.settings import Settings
from tests.deploy.test_deploy import IMAGE, _one, deploy, fake  # noqa: F401


def _env() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in Path(".env").read_text().splitlines() if "=" in line)
    return dict(pairs)


def test_one_trainer_endpoint_per_gpu_count_idempotently(deploy, fake) -> None:  # noqa: F811
    first = deploy(
        "--gpu", "H100_80GB_SXM", "--gpu-count", "1", "--gpu-count", "4", "--gpu-count", "2"
    )
    assert first.exit_code == 0, first.output
    one = _one(fake.endpoints, name="brightrun-trainer")
    two = _one(fake.endpoints, name="brightrun-trainer-x2")
    four = _one(fake.endpoints, name="brightrun-trainer-x4")
    assert one["gpu"].get("count", 1) == 1
    assert (two["gpu"]["count"], four["gpu"]["count"]) == (2, 4)
    assert four["image"] == one["image"] == IMAGE and four["env"] == one["env"]
    assert four["networkVolumes"] == one["networkVolumes"]
    urls = json.loads(_env()["GPU_CLUSTER_API_URLS"])
    assert urls == {"2": f"{fake.url}/v2/{two['id']}", "4": f"{fake.url}/v2/{four['id']}"}
    assert _env()["GPU_CLUSTER_API_URL"] == f"{fake.url}/v2/{one['id']}"

    writes, env = len(fake.writes()), Path(".env").read_text()
    again = deploy("--gpu", "H100_80GB_SXM", "--gpu-count", "4", "--gpu-count", "2")
    assert again.exit_code == 0, again.output
    assert len(fake.writes()) == writes and "Nothing to change" in again.output
    assert Path(".env").read_text() == env


def test_gpu_counts_are_checked_and_jobs_routed_by_count() -> None:
    with pytest.raises(ValidationError, match="from 1 to 8"):
        DeployConfig(image=IMAGE, gpu_counts=(9,))
    settings = Settings(
        _env_file=None,
        gpu_cluster_api_url="https://api.runpod.ai/v2/one",
        gpu_cluster_api_urls={"4": "https://api.runpod.ai/v2/four"},
    )
    assert trainer_endpoint(settings, 1) is None  # GPU_CLUSTER_API_URL
    assert trainer_endpoint(settings, 4) == "https://api.runpod.ai/v2/four"
    with pytest.raises(InvalidInput, match="brightrun deploy --gpu-count 2"):
        trainer_endpoint(settings, 2)
    local = Settings(_env_file=None)
    assert local.is_local_endpoint and trainer_endpoint(local, 2) is None  # any count on the CPU
