"""What every dataset reader yields, and the pieces the readers share.

A reader yields `Record`s: the 1-based row number, the parsed value (normally a dict) or
`None`, and a `Problem` when the row could not be read (`PROBLEM_KINDS` lists every kind
a problem can have, from the readers and from `core.datasets.layouts`). Text is UTF-8 (a
UTF-8 or UTF-16 byte order mark is honoured); bytes that are not UTF-8 make that row's
problem `not_utf8`. Nothing here raises on file content.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

PROBLEM_KINDS = (
    "invalid_json",
    "not_utf8",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "unknown_role",
    "empty_content",
    "missing_assistant",
    "role_order",
    "too_long",
    "wrong_columns",
    "invalid_csv",
    "invalid_parquet",
    "unknown_part",
    "invalid_tool_call",
    "unknown_function",
    "unanswered_tool_message",
    "invalid_tools",
    "identical_answers",
    "unhonoured_key",
    "template_refused",
)
PIECE = 1 << 20  # characters read at a time where no row is being kept


@dataclass(frozen=True)
class Problem:
    row: int  # 1-based; 0 for the file as a whole
    kind: str
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "kind": self.kind, "field": self.field, "message": self.message}


@dataclass(slots=True)
class Record:
    row: int
    value: Any = None
    problem: Problem | None = None
    raw_bytes: int = 0
    stops_reading: bool = False  # the reader could not go past this row


def bad_record(
    row: int, kind: str, message: str, field: str = "", *, stops: bool = False
) -> Record:
    """A row that could not be read; `stops` when the reader cannot go past it."""
    return Record(row, problem=Problem(row, kind, field, message), stops_reading=stops)


def too_long(row: int, max_row_bytes: int) -> Record:
    return bad_record(
        row, "too_long", f"the row is longer than {max_row_bytes} bytes; split or shorten it"
    )


def not_utf8(row: int) -> Record:
    return bad_record(row, "not_utf8", "the row is not valid UTF-8 text; save the file as UTF-8")


def is_utf8(data: str | bytes) -> bool:
    """Bytes that decode as UTF-8, or text without the surrogates that stand for bytes
    that did not (text is read with `surrogateescape`)."""
    try:
        data.encode("utf-8") if isinstance(data, str) else data.decode("utf-8")
    except UnicodeError:
        return False
    return True


def parse_json(data: str | bytes, row: int) -> Record:
    """One JSON value (a JSONL line, an array element), or why it cannot be read."""
    try:
        return Record(row, orjson.loads(data), raw_bytes=len(data))
    except orjson.JSONDecodeError as e:
        if not is_utf8(data):
            return not_utf8(row)
        msg = str(e).split(":", 1)[0] if str(e) else "not valid JSON"
        return bad_record(row, "invalid_json", f"not valid JSON ({msg})")


def sized_record(row: int, value: Any, max_row_bytes: int) -> Record:
    """A row already parsed (JSON document, Parquet), measured as JSON against the limit."""
    size = len(orjson.dumps(value, default=str))
    if size > max_row_bytes:
        return too_long(row, max_row_bytes)
    return Record(row, value, raw_bytes=size)


def encoding_of(head: bytes) -> tuple[str, int]:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16", 0  # the codec reads and drops the BOM
    return "utf-8", 0


def text_stream(f: IO[bytes], encoding: str, skip: int) -> io.TextIOWrapper:
    f.seek(skip)
    errors = "surrogateescape" if encoding == "utf-8" else "replace"
    return io.TextIOWrapper(f, encoding=encoding, errors=errors, newline="")


def capped_lines(
    readline: Callable[[int], Any], cap: int, newline: str | bytes
) -> Iterator[tuple[Any, int]]:
    """(line, length) for each physical line of a text or binary file; a line longer than
    `cap` is drained in pieces without being kept and comes as (None, its length)."""
    while True:
        line = readline(cap + 1)
        if not line:
            return
        if len(line) > cap and not line.endswith(newline):
            n = len(line)
            while True:
                more = readline(PIECE)
                n += len(more)
                if not more or more.endswith(newline):
                    break
            yield None, n
        else:
            yield line, len(line)
