"""The Train page's estimate on the local endpoint: the plan names the machine the job runs
on (LOCAL_CPU) and the rate it is billed at, and its time and cost ranges hold what an SFT
job and a DPO job then took and cost (real tiny jobs on the local endpoint, CPU)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import datasets, db, jobs
from core.clients.storage import make_blob_store
from core.datasets.tokens import load_tokenizer
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs.stack import LORA, Stack, make_stack
from tests.trainer.conftest import toy_rows
from tests.trainer.test_preference_job import toy_pairs

pytestmark = pytest.mark.slow
DATASETS: dict[str, str] = {}


def _add(settings: Settings) -> str:
    tok = load_tokenizer(str(settings.model_dirs[0] / "tiny"))
    for name, rows in (("chat", toy_rows()), ("pairs", toy_pairs({1, 2}))):
        path = settings.data_dir / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with db.session_scope(settings) as s:
            ds, _ = datasets.add_dataset(
                LOCAL_ACTOR, s, make_blob_store(settings), path, name, tokenizer=tok
            )
            DATASETS[name] = ds.id
    return DATASETS["chat"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(Path(tmp_path_factory.mktemp("estimate")), workers=1, dataset=_add)


@pytest.mark.parametrize(("method", "dataset"), [("sft", "chat"), ("dpo", "pairs")])
def test_the_estimate_names_the_local_cpu_and_holds_the_jobs_time_and_cost(
    stack: Stack, method: str, dataset: str
) -> None:
    settings = {
        "model": str(stack.model),
        "dataset_id": DATASETS[dataset],
        "lora": LORA,
        "training": stack.training,
        "quantization": "none",
        "method": method,
    }
    with db.session_scope(stack.settings) as s:
        pre = jobs.preflight(jobs.LaunchRequest.build(**settings), LOCAL_ACTOR, s, stack.settings)
    assert pre.can_launch, pre.blockers
    assert pre.pricing.gpu_type == "LOCAL_CPU" and "runs on LOCAL_CPU" in pre.pricing_note
    assert pre.time.gpu == "LOCAL_CPU" and pre.cost.rate_per_s == pre.pricing.rate_per_s
    job = stack.wait_end(jobs.submit(LOCAL_ACTOR, stack.settings, **settings).id)
    assert job.status == "COMPLETED", job.failure_message
    assert pre.cost.usd_low <= job.cost_usd <= pre.cost.usd_high
    low = pre.time.seconds_low + pre.time.cold_start_low_s
    high = pre.time.seconds_high + pre.time.cold_start_high_s
    assert low <= job.billed_s <= high
    assert job.gpu_type == "LOCAL_CPU" and job.rate_per_s == pre.cost.rate_per_s
    (done,) = [e for e in stack.events(job.id) if e.type == "completed"]
    trained_s = done.data["summary"]["train_seconds"]  # the page's "Training time" range
    assert pre.time.seconds_low <= trained_s <= pre.time.seconds_high
