"""KTO data (single answers labelled desirable or not) is stored as what it is, and no
method may launch on it: preflight refuses every method with the reason, so it is never
trained as if every answer were a good one."""

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


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_preflight_refuses_a_kto_dataset_with_the_reason(tmp_path: Path, method: str) -> None:
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
            pre = jobs.preflight(request, LOCAL_ACTOR, s, settings)
    finally:
        db.dispose_engines()
    assert not pre.can_launch
    (refusal,) = [b for b in pre.blockers if "labelled" in b]
    assert "cannot be trained" in refusal and "no method trains KTO" in refusal
