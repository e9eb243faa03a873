"""No input makes inspection crash: random bytes, random text, random JSON rows in every
format. Each run gives a consistent report."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.datasets import inspect_file
from tests.datasets.helpers import write_csv, write_json_array, write_jsonl, write_parquet

FIELDS = [
    "messages",
    "conversations",
    "instruction",
    "input",
    "output",
    "prompt",
    "completion",
    "text",
    "system",
    "history",
    "role",
    "content",
    "from",
    "value",
]
ROLES = ["user", "assistant", "system", "tool", "human", "gpt", "wizard", "", "USER"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(ROLES) | scalars,
            "content": st.text(max_size=20) | scalars,
            "from": st.sampled_from(ROLES),
            "value": st.text(max_size=20),
        },
    ),
    max_size=5,
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3)
    ),
    max_leaves=8,
)
rows = st.lists(
    st.dictionaries(st.sampled_from(FIELDS), values | messages, max_size=4) | values,
    max_size=8,
)

# BRIGHTRUN_FUZZ_EXAMPLES=2000 runs a longer search locally.
SETTINGS = settings(
    max_examples=int(os.environ.get("BRIGHTRUN_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _check(path: Path) -> None:
    rep = inspect_file(path, max_row_bytes=4096)
    d = rep.to_dict()
    assert 0 <= d["valid_rows"] <= d["rows"]
    assert d["split"]["train_rows"] + d["split"]["eval_rows"] == d["valid_rows"]
    assert d["usable"] == (d["valid_rows"] > 0 and rep.reason is None)
    if not d["usable"]:
        assert d["reason"]
    json.dumps(d)  # the report is always plain JSON


@SETTINGS
@given(
    data=st.binary(max_size=3000),
    suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".txt"]),
)
def test_random_bytes(data: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"f{suffix}"
        p.write_bytes(data)
        _check(p)


@SETTINGS
@given(text=st.text(max_size=2000), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_random_text(text: str, encoding: str):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.jsonl"
        p.write_bytes(text.encode(encoding, errors="replace"))
        _check(p)


@SETTINGS
@given(
    data=rows,
    fmt=st.sampled_from(["jsonl", "json", "csv"]),
    cut=st.integers(min_value=0, max_value=50),
)
def test_random_rows_in_text_formats_whole_and_cut_short(data: list, fmt: str, cut: int):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"f.{fmt}"
        if fmt == "jsonl":
            write_jsonl(p, data)
        elif fmt == "json":
            write_json_array(p, data)
        else:
            dict_rows = [r for r in data if isinstance(r, dict)]
            write_csv(p, dict_rows or [{"text": ""}])
        _check(p)
        raw = p.read_bytes()
        p.write_bytes(raw[: max(0, len(raw) - cut)])
        _check(p)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.dictionaries(
            st.sampled_from(["messages", "text", "prompt", "completion"]),
            st.text(max_size=10) | messages,
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_random_rows_in_parquet(data: list):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.parquet"
        keys = sorted({k for r in data for k in r})
        try:
            write_parquet(p, [{k: json.dumps(r.get(k)) for k in keys} for r in data])
        except (TypeError, ValueError):
            return
        _check(p)


turns = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", "gpt", "human"]),
            "from": st.sampled_from(["human", "gpt", "system", "tool", " Human", "user"]),
            "content": st.sampled_from(["hi", "ok", " ", ""]),
            "value": st.sampled_from(["hi", "ok", " "]),
        }
    ),
    max_size=6,
)
chat_rows = st.fixed_dictionaries(
    {"messages": messages | turns, "conversations": messages | turns},
    optional={"system": st.sampled_from(["", "be brief"])},
)


@settings(max_examples=300, deadline=None)
@given(value=chat_rows, layout=st.sampled_from(["messages", "sharegpt"]))
def test_the_fast_path_agrees_with_the_full_checks(value: dict, layout: str):
    from core.datasets.layouts import normalise_row, normalise_row_checked

    fast, fast_problems = normalise_row(value, layout, 1)
    full, full_problems = normalise_row_checked(value, layout, 1)
    assert fast == full
    assert (fast_problems == []) == (full_problems == [])
