"""Every layout in every file format becomes the same chat rows; bad rows are named by row,
field and kind; nothing crashes and memory stays bounded."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from core.datasets import inspect_file
from core.datasets.ingest import process_file
from core.datasets.layouts import normalise_row
from tests.datasets.helpers import chat, write_csv, write_json_array, write_jsonl, write_parquet

EXPECTED = [
    {
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ]
    },
]

LAYOUT_ROWS = {
    "messages": [
        {
            "messages": [
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},
            ]
        },
        {
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris"},
            ],
        },
    ],
    "sharegpt": [
        {
            "conversations": [
                {"from": "human", "value": "What is 2+2?"},
                {"from": "gpt", "value": "4"},
            ]
        },
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Capital of France?"},
                {"from": "gpt", "value": "Paris"},
            ]
        },
    ],
    "alpaca": [
        {"instruction": "What is 2+2?", "input": "", "output": "4"},
        {"instruction": "Capital of France?", "output": "Paris", "system": "Be brief."},
    ],
    "prompt_completion": [
        {"prompt": "What is 2+2?", "completion": "4"},
        {"prompt": "Capital of France?", "completion": "Paris", "system": "Be brief."},
    ],
}

WRITERS = {
    "jsonl": (write_jsonl, ".jsonl"),
    "json": (write_json_array, ".json"),
    "csv": (write_csv, ".csv"),
    "parquet": (write_parquet, ".parquet"),
}


def _rows(path: Path, **kw) -> tuple[list[dict], object]:
    out = path.with_suffix(".out")
    with open(out, "wb") as f:
        rep = process_file(path, train_out=f, eval_out=f, eval_fraction=0.0, **kw)
    return [json.loads(line) for line in out.read_text().splitlines()], rep


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("layout", list(LAYOUT_ROWS))
def test_each_layout_in_each_format_normalises_to_the_same_chat_rows(
    tmp_path: Path, layout: str, fmt: str
):
    writer, ext = WRITERS[fmt]
    rows = LAYOUT_ROWS[layout]
    if fmt == "parquet":  # one schema per file: give every row every column
        keys = {k for r in rows for k in r}
        rows = [{k: r.get(k) for k in sorted(keys)} for r in rows]
    path = writer(tmp_path / f"data{ext}", rows)
    got, rep = _rows(path)
    assert (rep.file_format, rep.layout) == (fmt, layout)
    assert got == EXPECTED
    assert (rep.rows, rep.valid_rows) == (2, 2)


def test_plain_text_rows_keep_their_text(tmp_path: Path):
    got, rep = _rows(
        write_jsonl(tmp_path / "t.jsonl", [{"text": "Once upon a time."}, {"text": "The end."}])
    )
    assert rep.layout == "text"
    assert got == [{"text": "Once upon a time."}, {"text": "The end."}]


def test_alpaca_input_and_history_become_turns():
    row, problems = normalise_row(
        {
            "instruction": "Translate",
            "input": "chat",
            "output": "cat",
            "history": [["hi", "hello"]],
        },
        "alpaca",
        1,
    )
    assert problems == []
    assert row == {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "Translate\n\nchat"},
            {"role": "assistant", "content": "cat"},
        ]
    }


def test_openai_text_parts_and_multi_turn():
    row, problems = normalise_row(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": "c"},
                {"role": "user", "content": "d"},
                {"role": "assistant", "content": "e", "tool_calls": None},
            ]
        },
        "messages",
        1,
    )
    assert problems == []
    assert [m["content"] for m in row["messages"]] == ["ab", "c", "d", "e"]


def test_json_document_with_rows_under_a_key_and_tsv(tmp_path: Path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"version": 1, "data": LAYOUT_ROWS["alpaca"]}, indent=2))
    got, rep = _rows(p)
    assert rep.file_format == "json" and got == EXPECTED
    got, rep = _rows(
        write_csv(tmp_path / "d.tsv", LAYOUT_ROWS["prompt_completion"], delimiter="\t")
    )
    assert got == EXPECTED


def test_byte_order_marks_and_utf16_are_read(tmp_path: Path):
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [chat("Grüße", "Hallo ✓")])
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (tmp_path / "u16.jsonl").write_bytes(text.encode("utf-16"))
    for name in ("bom.jsonl", "u16.jsonl"):
        got, rep = _rows(tmp_path / name)
        assert got == [chat("Grüße", "Hallo ✓")], name


BAD_ROWS = [
    (chat("ok", "fine"), None, None),
    ('{"messages": [{"role": "user", "content": "x"}]}', "missing_assistant", "messages"),
    (
        '{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}',
        "unknown_role",
        "messages[0].role",
    ),
    (
        '{"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "y"}]}',
        "empty_content",
        "messages[0].content",
    ),
    (
        '{"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "y"}]}',
        "wrong_type",
        "messages[0].content",
    ),
    ('{"messages": "hello"}', "wrong_type", "messages"),
    (
        '{"messages": [{"role": "assistant", "content": "y"}, {"role": "user", "content": "x"}]}',
        "role_order",
        "messages[0]",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}',
        "role_order",
        "messages[1]",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "y"}]}',
        "role_order",
        "messages[1]",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}]}',
        "role_order",
        "messages[2]",
    ),
    ('{"prompt": "x"}', "missing_field", "messages"),
    ("[1, 2, 3]", "not_an_object", ""),
    ("{not json", "invalid_json", ""),
]


def test_every_bad_row_is_named_by_row_field_and_kind(tmp_path: Path):
    lines = [r if isinstance(r, str) else json.dumps(r) for r, _, _ in BAD_ROWS]
    lines.insert(3, "")  # a blank line is skipped but still counts as a line number
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    rep = inspect_file(p)
    assert rep.layout == "messages"
    assert (rep.rows, rep.valid_rows) == (len(BAD_ROWS), 1)
    expected = []
    for i, (_, kind, fld) in enumerate(BAD_ROWS):
        if kind:
            expected.append((i + 1 + (1 if i >= 3 else 0), kind, fld))
    assert [(p.row, p.kind, p.field) for p in rep.problem_examples] == expected
    counts = rep.to_dict()["problems"]
    assert (
        counts["role_order"] == 4
        and counts["wrong_type"] == 2
        and sum(counts.values()) == len(expected)
    )


def test_wrong_encoding_is_a_row_problem_not_a_crash(tmp_path: Path):
    p = tmp_path / "latin1.jsonl"
    latin1 = b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}'
    p.write_bytes(json.dumps(chat("ok", "fine")).encode() + b"\n" + latin1 + b"\n")
    rep = inspect_file(p)
    assert rep.valid_rows == 1
    assert [(x.row, x.kind) for x in rep.problem_examples] == [(2, "not_utf8")]


def test_csv_cells_with_bad_json_and_wrong_columns(tmp_path: Path):
    p = tmp_path / "c.csv"
    p.write_text(
        'messages,id\n"[{""role"": ""user"", ""content"": ""a""}, {""role"": ""assistant"", ""content"": ""b""}]",1\n"[broken",2\nonly-one-cell\n'
    )
    rep = inspect_file(p)
    assert rep.valid_rows == 1
    assert [(x.row, x.kind, x.field) for x in rep.problem_examples] == [
        (2, "invalid_json", "messages"),
        (3, "wrong_columns", ""),
    ]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"   \n\n  ", "whitespace"),
        (b"\x00\x01\x02binary\x00garbage", "binary"),
        (b"PAR1 not really parquet", "Parquet"),
        (b"hello world, just prose\n", "not recognised"),
        (json.dumps([{"question": "a", "answer": "b"}]).encode(), "no known layout"),
    ],
)
def test_unusable_files_say_why(tmp_path: Path, content: bytes, reason: str):
    p = tmp_path / "f.dat"
    p.write_bytes(content)
    rep = inspect_file(p)
    assert not rep.usable
    assert reason in rep.why_unusable()


def test_an_over_long_line_is_skipped_in_bounded_memory(tmp_path: Path):
    p = tmp_path / "long.jsonl"
    with open(p, "wb") as f:
        f.write(json.dumps(chat("first", "row")).encode() + b"\n")
        f.write(
            b'{"messages": [{"role": "user", "content": "' + b"x" * (40 * 1024 * 1024) + b'"}]}\n'
        )
        f.write(json.dumps(chat("third", "row")).encode() + b"\n")
    tracemalloc.start()
    try:
        rep = inspect_file(p, max_row_bytes=1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (rep.rows, rep.valid_rows) == (3, 2)
    assert [(x.row, x.kind) for x in rep.problem_examples] == [(2, "too_long")]
    assert peak < 12 * 1024 * 1024  # a 40 MB line never sits in memory


def test_an_over_long_json_array_element_is_skipped(tmp_path: Path):
    p = tmp_path / "arr.json"
    big = {
        "messages": [
            {"role": "user", "content": "y" * 3_000_000},
            {"role": "assistant", "content": "z"},
        ]
    }
    p.write_text(json.dumps([chat("a", "b"), big, chat("c", "d")]))
    rep = inspect_file(p, max_row_bytes=1_000_000)
    assert (rep.rows, rep.valid_rows) == (3, 2)
    assert [(x.row, x.kind) for x in rep.problem_examples] == [(2, "too_long")]


def test_a_cut_short_json_array_keeps_what_was_complete(tmp_path: Path):
    p = tmp_path / "cut.json"
    p.write_text(json.dumps([chat("a", "b"), chat("c", "d")])[:-20])
    rep = inspect_file(p)
    assert rep.valid_rows == 1 and rep.read_stopped


def test_csv_line_over_the_limit_stops_with_a_reason(tmp_path: Path):
    p = tmp_path / "c.csv"
    p.write_text("prompt,completion\na,b\n" + "x" * 5000 + ",y\nc,d\n")
    rep = inspect_file(p, max_row_bytes=1000)
    assert rep.valid_rows == 1 and rep.read_stopped
    assert rep.problem_examples[0].kind == "too_long"


def test_parquet_streams_by_row_groups(tmp_path: Path):
    rows = [chat(f"q{i}", f"a{i}") for i in range(500)]
    got, rep = _rows(write_parquet(tmp_path / "p.parquet", rows, row_group_size=64))
    assert rep.valid_rows == 500 and got[499] == rows[499]


def test_duplicates_and_a_deterministic_split(tmp_path: Path):
    rows = [chat(f"question {i}", f"answer {i}") for i in range(2000)] + [
        chat("question 1", "answer 1")
    ] * 3
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    a = inspect_file(p)
    b = inspect_file(p)
    assert a.duplicates == 3
    assert (a.train_rows, a.eval_rows) == (b.train_rows, b.eval_rows)
    assert a.train_rows + a.eval_rows == 2003
    assert 60 <= a.eval_rows <= 145  # about 5%


def test_the_split_follows_split_of(tmp_path: Path):
    from core.datasets.ingest import split_of

    rows = [chat(f"q{i}", f"a{i}") for i in range(300)]
    out_t, out_e = tmp_path / "t", tmp_path / "e"
    with open(out_t, "wb") as t, open(out_e, "wb") as e:
        process_file(
            write_jsonl(tmp_path / "d.jsonl", rows), train_out=t, eval_out=e, eval_fraction=0.2
        )
    for path, side in ((out_t, "train"), (out_e, "eval")):
        lines = path.read_bytes().splitlines(keepends=True)
        assert lines and all(split_of(line, 0.2) == side for line in lines)
