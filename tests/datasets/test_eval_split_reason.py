"""Why a dataset has no eval split is said by the rule that decided it when it was added:
too few rows, or a hash-drawn split that drew none (a 24-row dataset may hold out none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import datasets, db
from core.clients.inference import eval_split_cases
from core.datasets.ingest import split_of
from core.errors import InvalidInput
from core.users import LOCAL_ACTOR
from tests.datasets.helpers import chat, write_jsonl


def _rows_the_split_keeps_in_train(n: int, fraction: float) -> list[dict]:
    import orjson

    rows, i = [], 0
    while len(rows) < n:
        row = chat(f"Question {i}?", f"Answer {i}.")
        if split_of(orjson.dumps(row) + b"\n", fraction) == "train":
            rows.append(row)
        i += 1
    return rows


def test_a_dataset_of_24_rows_that_drew_no_eval_rows_says_so(tmp_path: Path, env) -> None:
    settings, store = env
    src = write_jsonl(tmp_path / "small.jsonl", _rows_the_split_keeps_in_train(24, 0.05))
    few = write_jsonl(tmp_path / "few.jsonl", [chat("Hi?", "Hello.")] * 1 + [chat("A?", "B.")])
    with db.session_scope(settings) as s:
        ds, _ = datasets.add_dataset(LOCAL_ACTOR, s, store, src, "small")
        tiny_ds, _ = datasets.add_dataset(LOCAL_ACTOR, s, store, few, "few")
        assert ds.stats["split"]["eval_rows"] == 0 and ds.valid_rows == 24
        reason = datasets.no_eval_split_reason(ds)
        assert "each of its 24 rows was held out with a 5% chance" in reason
        assert "20 rows or more" not in reason
        assert "has 2 rows, and datasets under 20 rows hold none out" in (
            datasets.no_eval_split_reason(tiny_ds)
        )
        with pytest.raises(InvalidInput, match="each of its 24 rows was held out"):
            eval_split_cases(LOCAL_ACTOR, s, store, ds.id)
