"""KTO data (single answers labelled desirable or not) trains with method kto only: the
preflight passes a kto launch on it, and refuses SFT and DPO with the reason, so it is never
trained as if every answer were a good one (nor as pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import datasets, db, jobs, planner
from core.clients.storage import make_blob_store
from core.settings import Settings
from core.users import LOCAL_ACTOR

ROWS = [
    {"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": i % 2 == 0}
    for i in range(6)
]


def _preflight(tmp_path: Path, method: str) -> jobs.Preflight:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    db.upgrade(settings)
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    try:
        with db.session_scope(settings) as s:
            ds, report = datasets.add_dataset(
                LOCAL_ACTOR, s, make_blob_store(settings), path, "labelled"
            )
            assert (ds.layout, report.valid_rows) == ("kto", 6)
            dataset_id = ds.id
        request = jobs.LaunchRequest.build(
            model=planner.TINY_ID,
            dataset_id=dataset_id,
            quantization="none",
            budget_usd=1.0,
            method=method,
        )
        with db.session_scope(settings) as s:
            return jobs.preflight(request, LOCAL_ACTOR, s, settings)
    finally:
        db.dispose_engines()


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_preflight_refuses_other_methods_on_a_kto_dataset(tmp_path: Path, method: str) -> None:
    pre = _preflight(tmp_path, method)
    assert not pre.can_launch
    (refusal,) = [b for b in pre.blockers if "labelled" in b]
    assert f"method {method} trains on" in refusal and "with method kto" in refusal


def test_preflight_passes_kto_on_a_kto_dataset(tmp_path: Path) -> None:
    pre = _preflight(tmp_path, "kto")
    assert pre.can_launch, pre.blockers


def test_an_unknown_method_is_refused_naming_the_choices() -> None:
    from core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="choose one of sft, dpo, orpo, kto, grpo"):
        jobs.LaunchRequest.build(model=planner.TINY_ID, method="ppo")
