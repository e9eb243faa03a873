"""Train page, several GPUs: a job too big for one GPU shows how many of the chosen type
fit it, the GPU count makes it fit (memory per GPU, cost for all of them), and Launch
sends the count in the spec."""

from __future__ import annotations

from core import db
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import text_of
from tests.ui.test_train_page import _launch, dataset  # noqa: F401


def _metric(at, label: str) -> str:
    return next(m for m in at.metric if m.label == label).value


def test_a_72b_job_fits_on_the_gpu_count_the_plan_names(dataset: str, open_page) -> None:  # noqa: F811
    at = open_page("train")
    at.number_input(key="train.budget").set_value(500.0).run()
    at.selectbox(key="train.model").select("Qwen/Qwen2.5-72B-Instruct").run()
    at.selectbox(key="train.quantization").select("none").run()
    at.number_input(key="train.max_length").set_value(2048).run()
    at.number_input(key="train.micro_batch_size").set_value(1).run()
    assert "fits on 3 x H100 PCIe 80 GB (fsdp" in text_of(at)
    one = float(_metric(at, "Peak memory").split()[0])
    at.number_input(key="train.gpus").set_value(3).run()
    three = float(_metric(at, "Peak memory").split()[0])
    assert three < one / 2
    assert "it does not fit" not in text_of(at)


def test_launch_sends_the_gpu_count(
    settings: Settings,
    dataset: str,  # noqa: F811
    endpoint,
    open_page,
) -> None:
    at = open_page("train")
    at.selectbox(key="train.quantization").select("none").run()
    at.number_input(key="train.gpus").set_value(2).run()
    _launch(at).click().run()
    assert not at.exception
    with db.session_scope(settings) as s:
        (job,) = repo.list_jobs(LOCAL_ACTOR, s)
    assert job.spec["gpus"] == 2
    (sent,) = endpoint.jobs.values()
    assert sent.input["gpus"] == 2
