"""Reading dataset files as a stream of records, in memory bounded by a constant.

`open_records(path, max_row_bytes)` detects the file format and yields `Record`s: the
1-based row number, the parsed value (normally a dict) or `None`, and a problem when the
row could not be read. Never raises on bad content: a file that cannot be read at all
raises `DatasetUnusable` with the reason, up front, and a read that has to stop part way
(a CSV line beyond the limit) ends with a `Record` whose problem says so.

Formats, in the order detection tries them:
- Parquet: the `PAR1` magic. Read in batches of rows (one row group at a time at most).
- JSON array (first character `[`): elements streamed by a scanner that never holds more
  than one element (`max_row_bytes` characters); elements larger than that are skipped.
- JSON document (`{` spanning several lines): read whole only up to 64 MB; a top-level
  list under `data`/`rows`/`train`/`examples`/`records` (or the only list) gives the rows.
- JSONL (`{` and the first line is a whole JSON value): one row per line; blank lines are
  skipped; row numbers are line numbers; lines longer than `max_row_bytes` are skipped
  without being read into memory.
- CSV/TSV (extension `.csv`/`.tsv`, or a header line with a known column): one row per
  record after the header, the delimiter sniffed from the header; cells holding JSON
  lists (`messages`, `conversations`, `history`) are parsed.
The extension is only a hint; the content decides. Text is UTF-8 (a UTF-8 or UTF-16 byte
order mark is honoured); bytes that are not UTF-8 make that row's problem `not_utf8`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from core.errors import DatasetUnusable

FORMATS = ("jsonl", "json", "csv", "parquet")
PROBLEM_KINDS = (
    "invalid_json", "not_utf8", "not_an_object", "missing_field", "wrong_type",
    "unknown_role", "empty_content", "missing_assistant", "role_order", "too_long",
    "wrong_columns", "invalid_csv", "invalid_parquet",
)  # fmt: skip
JSON_DOC_LIMIT = 64 * 1024 * 1024
_SNIFF = 64 * 1024
_JSON_LIST_CELLS = ("messages", "conversations", "history")
_DOC_LIST_KEYS = ("data", "rows", "train", "examples", "records", "items")
_KNOWN_COLUMNS = (
    "messages",
    "conversations",
    "instruction",
    "prompt",
    "text",
    "output",
    "completion",
)


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


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parse_json_text(text: str, row: int) -> Record:
    try:
        return Record(row, orjson.loads(text), raw_bytes=len(text))
    except orjson.JSONDecodeError as e:
        if _has_surrogates(text):
            return Record(
                row,
                problem=Problem(
                    row, "not_utf8", "", "the row is not valid UTF-8 text; save the file as UTF-8"
                ),
            )
        msg = str(e).split(":", 1)[0] if str(e) else "not valid JSON"
        return Record(row, problem=Problem(row, "invalid_json", "", f"not valid JSON ({msg})"))


def _too_long(row: int, max_row_bytes: int) -> Record:
    return Record(
        row,
        problem=Problem(
            row,
            "too_long",
            "",
            f"the row is longer than {max_row_bytes} bytes; split or shorten it",
        ),
    )


# --------------------------------------------------------------------------- detection


def _encoding(head: bytes) -> tuple[str, int]:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16", 0  # the codec reads and drops the BOM
    return "utf-8", 0


def _text(f: IO[bytes], encoding: str, skip: int) -> io.TextIOWrapper:
    f.seek(skip)
    errors = "surrogateescape" if encoding == "utf-8" else "replace"
    return io.TextIOWrapper(f, encoding=encoding, errors=errors, newline="")


def detect_format(path: Path) -> str:
    """One of FORMATS, or raise DatasetUnusable saying why the file is none of them."""
    size = path.stat().st_size
    if size == 0:
        raise DatasetUnusable("the file is empty")
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    ext = path.suffix.lower()
    if head.startswith(b"PAR1"):
        return "parquet"
    if ext == ".parquet":
        raise DatasetUnusable("the file is named .parquet but is not a Parquet file")
    encoding, skip = _encoding(head)
    if encoding == "utf-8" and b"\x00" in head:
        raise DatasetUnusable("the file is binary, not JSON, JSONL, CSV or Parquet text")
    text = (
        head[skip:].decode(encoding, errors="replace")
        if encoding == "utf-8"
        else _decode_head(head)
    )
    stripped = text.lstrip()
    if ext in (".csv", ".tsv"):
        return "csv"
    if not stripped:
        raise DatasetUnusable("the file holds only whitespace")
    if stripped[0] == "[":
        return "json"
    if stripped[0] == "{":
        first_line = stripped.split("\n", 1)[0].strip()
        if _parses_as_json(first_line):
            return "jsonl"
        if len(first_line) >= len(stripped) - 1 and len(head) == _SNIFF:
            return "jsonl"  # a first line longer than the sniffed part: JSONL decides per row
        # JSONL rows start at the left margin; a pretty-printed document has one such '{'.
        if sum(1 for line in stripped.split("\n") if line.startswith("{")) >= 2:
            return "jsonl"
        return "json"
    first = stripped.split("\n", 1)[0].lower()
    if any(col in first for col in _KNOWN_COLUMNS) and any(d in first for d in ",\t;|"):
        return "csv"
    raise DatasetUnusable(
        "the format is not recognised: expected JSONL (one JSON object per line), a JSON "
        "array, CSV with a header row, or Parquet"
    )


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _decode_head(head: bytes) -> str:
    return head.decode("utf-16", errors="replace")


# --------------------------------------------------------------------------- readers


def _lines_capped(text: IO[str], cap: int) -> Iterator[tuple[str | None, int]]:
    """Physical lines (None for one longer than `cap` characters, skipped in pieces)."""
    while True:
        line = text.readline(cap + 1)
        if not line:
            return
        if len(line) > cap and not line.endswith("\n"):
            n = len(line)
            while True:  # drain the rest of the over-long line without keeping it
                more = text.readline(1 << 20)
                n += len(more)
                if not more or more.endswith("\n"):
                    break
            yield None, n
            continue
        yield line, len(line)


def read_jsonl(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    text = _text(f, encoding, skip)
    lineno = 0
    for line, _n in _lines_capped(text, max_row_bytes):
        lineno += 1
        if line is None:
            yield _too_long(lineno, max_row_bytes)
            continue
        if not line.strip():
            continue
        yield _parse_json_text(line, lineno)


def read_jsonl_utf8(path: Path, max_row_bytes: int, skip: int = 0) -> Iterator[Record]:
    """UTF-8 JSONL without decoding to str first (orjson parses bytes and checks UTF-8)."""
    with open(path, "rb") as f:
        f.seek(skip)
        yield from _jsonl_bytes(f, max_row_bytes)


def _jsonl_bytes(f: IO[bytes], max_row_bytes: int) -> Iterator[Record]:
    readline = f.readline
    loads = orjson.loads
    lineno = 0
    while True:
        line = readline(max_row_bytes + 1)
        if not line:
            return
        lineno += 1
        if len(line) > max_row_bytes and not line.endswith(b"\n"):
            while True:  # drain the rest of the over-long line without keeping it
                more = readline(1 << 20)
                if not more or more.endswith(b"\n"):
                    break
            yield _too_long(lineno, max_row_bytes)
            continue
        try:
            yield Record(lineno, loads(line), raw_bytes=len(line))
        except orjson.JSONDecodeError as e:
            if line.isspace():
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                yield Record(
                    lineno,
                    problem=Problem(
                        lineno,
                        "not_utf8",
                        "",
                        "the row is not valid UTF-8 text; save the file as UTF-8",
                    ),
                )
                continue
            msg = str(e).split(":", 1)[0] if str(e) else "not valid JSON"
            yield Record(
                lineno, problem=Problem(lineno, "invalid_json", "", f"not valid JSON ({msg})")
            )


_STR_SPECIAL = re.compile(r'["\\]')
_STRUCT_SPECIAL = re.compile(r'["\[\]{},]')


def read_json_array(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    """Elements of a top-level JSON array, one at a time."""
    text = _text(f, encoding, skip)
    depth = 0
    in_str = False
    escape = False
    parts: list[str] = []
    size = 0
    too_long = False
    index = 0
    started = False  # inside the top-level array
    closed = False

    def take(piece: str) -> None:
        nonlocal parts, size, too_long
        size += len(piece)
        if size > max_row_bytes:
            too_long = True
            parts = []
        elif piece:
            parts.append(piece)

    def element() -> Record | None:
        nonlocal parts, size, too_long, index
        body = "".join(parts).strip()
        was_long = too_long
        parts, size, too_long = [], 0, False
        if not body and not was_long:
            return None
        index += 1
        if was_long:
            return _too_long(index, max_row_bytes)
        return _parse_json_text(body, index)

    while not closed:
        chunk = text.read(1 << 20)
        if not chunk:
            break
        pos = 0
        n = len(chunk)
        seg_start = 0 if started else n  # where the current element's text starts in chunk
        while pos < n:
            if escape:
                escape = False
                pos += 1
                continue
            if in_str:
                m = _STR_SPECIAL.search(chunk, pos)
                if m is None:
                    pos = n
                    break
                pos = m.end()
                if m.group() == "\\":
                    escape = True
                else:
                    in_str = False
                continue
            m = _STRUCT_SPECIAL.search(chunk, pos)
            if m is None:
                pos = n
                break
            c = m.group()
            pos = m.end()
            if not started:
                if c == "[":
                    started = True
                    depth = 1
                    seg_start = pos
                continue
            if c == '"':
                in_str = True
            elif c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:  # the array closed
                    take(chunk[seg_start : pos - 1])
                    rec = element()
                    if rec is not None:
                        yield rec
                    closed = True
                    break
            elif c == "," and depth == 1:
                take(chunk[seg_start : pos - 1])
                rec = element()
                if rec is None:
                    index += 1
                    rec = Record(
                        index, problem=Problem(index, "invalid_json", "", "an empty array element")
                    )
                yield rec
                seg_start = pos
        if started and not closed:
            take(chunk[seg_start:])
    if started and not closed:
        rec = element()
        if rec is not None:
            yield rec
        yield Record(
            index + 1,
            problem=Problem(
                0, "invalid_json", "", "the JSON array is not closed: the file may be cut short"
            ),
            stops_reading=True,
        )


def read_json_document(path: Path, max_row_bytes: int) -> Iterator[Record]:
    if path.stat().st_size > JSON_DOC_LIMIT:
        raise DatasetUnusable(
            f"a JSON file that is one object must be under {JSON_DOC_LIMIT // (1 << 20)} MB; "
            "save large datasets as JSONL or a JSON array"
        )
    raw = path.read_bytes()
    encoding, skip = _encoding(raw)
    try:
        doc = orjson.loads(raw[skip:]) if encoding == "utf-8" else json.loads(raw.decode("utf-16"))
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise DatasetUnusable(f"the file is not valid JSON ({type(e).__name__})") from None
    rows: Any = doc
    if isinstance(doc, dict):
        lists = {
            k: v for k, v in doc.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        }
        key = next((k for k in _DOC_LIST_KEYS if k in lists), None)
        if key is None and len(lists) == 1 and not {"messages", "conversations"} & set(lists):
            key = next(iter(lists))
        rows = doc[key] if key is not None else [doc]
    if not isinstance(rows, list):
        raise DatasetUnusable("the JSON file holds neither rows (objects) nor a list of them")
    del raw
    for i, value in enumerate(rows, start=1):
        size = len(orjson.dumps(value))
        if size > max_row_bytes:
            yield _too_long(i, max_row_bytes)
        else:
            yield Record(i, value, raw_bytes=size)


class _LineTooLong(Exception):
    def __init__(self, row: int, length: int) -> None:
        super().__init__(row, length)
        self.row = row
        self.length = length


def read_csv(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    text = _text(f, encoding, skip)
    physical = 0

    def lines() -> Iterator[str]:
        nonlocal physical
        for line, n in _lines_capped(text, max_row_bytes):
            physical += 1
            if line is None:
                raise _LineTooLong(physical, n)
            yield line

    csv.field_size_limit(max_row_bytes)
    source = lines()
    try:
        header_line = next(source)
    except StopIteration:
        return
    except _LineTooLong:
        yield Record(
            0,
            problem=Problem(0, "too_long", "", "the CSV header line is longer than the row limit"),
            stops_reading=True,
        )
        return
    dialect: type[csv.Dialect] | csv.Dialect = csv.excel
    counts = {d: header_line.count(d) for d in (",", "\t", ";", "|")}
    delim = max(counts, key=lambda d: counts[d])
    if counts[delim] == 0:
        delim = ","
    header = next(csv.reader([header_line], dialect, delimiter=delim))
    header = [h.strip().lstrip("\ufeff") for h in header]
    reader = csv.reader(_chain(header_line, source), dialect, delimiter=delim)
    next(reader)
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _LineTooLong as e:
            row += 1
            yield Record(
                row,
                problem=Problem(
                    row,
                    "too_long",
                    "",
                    f"a CSV line of {e.length} characters is longer than the limit of {max_row_bytes}; the rows after it were not read",
                ),
                stops_reading=True,
            )
            return
        except csv.Error as e:
            row += 1
            yield Record(
                row,
                problem=Problem(
                    row,
                    "invalid_csv",
                    "",
                    f"the CSV cannot be read past here ({e}); the rows after it were not read",
                ),
                stops_reading=True,
            )
            return
        if not cells or not any(c.strip() for c in cells):
            continue
        row += 1
        if len(cells) != len(header):
            yield Record(
                row,
                problem=Problem(
                    row,
                    "wrong_columns",
                    "",
                    f"the row has {len(cells)} cells but the header has {len(header)} columns",
                ),
            )
            continue
        joined = sum(len(c) for c in cells)
        if any(_has_surrogates(c) for c in cells):
            yield Record(
                row,
                problem=Problem(
                    row, "not_utf8", "", "the row is not valid UTF-8 text; save the file as UTF-8"
                ),
            )
            continue
        value: dict[str, Any] = dict(zip(header, cells, strict=True))
        for col in _JSON_LIST_CELLS:
            cell = value.get(col)
            if isinstance(cell, str) and cell.strip().startswith(("[", "{")):
                try:
                    value[col] = orjson.loads(cell)
                except orjson.JSONDecodeError:
                    yield Record(
                        row,
                        problem=Problem(
                            row, "invalid_json", col, f"the {col} cell is not valid JSON"
                        ),
                    )
                    break
        else:
            yield Record(row, value, raw_bytes=joined)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def read_parquet(path: Path, max_row_bytes: int, batch_rows: int = 2048) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise DatasetUnusable(f"the Parquet file cannot be read ({type(e).__name__})") from None
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            for value in batch.to_pylist():
                row += 1
                size = len(orjson.dumps(value, default=str))
                if size > max_row_bytes:
                    yield _too_long(row, max_row_bytes)
                else:
                    yield Record(row, value, raw_bytes=size)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        yield Record(
            row + 1,
            problem=Problem(
                row + 1,
                "invalid_parquet",
                "",
                f"the Parquet file cannot be read past here ({type(e).__name__}); the rows after it were not read",
            ),
            stops_reading=True,
        )


def open_records(
    path: Path, max_row_bytes: int, file_format: str | None = None
) -> tuple[str, Iterator[Record]]:
    """(format, records). Raises DatasetUnusable when the file cannot be read at all."""
    fmt = file_format or detect_format(path)
    if fmt == "parquet":
        return fmt, read_parquet(path, max_row_bytes)
    if fmt == "json":
        with open(path, "rb") as f:
            head = f.read(_SNIFF)
        encoding, skip = _encoding(head)
        text = (
            head[skip:].decode(encoding, errors="replace")
            if encoding == "utf-8"
            else _decode_head(head)
        )
        if text.lstrip().startswith("{"):
            return fmt, read_json_document(path, max_row_bytes)
        return fmt, _with_file(path, read_json_array, max_row_bytes)
    if fmt == "jsonl":
        with open(path, "rb") as f:
            encoding, skip = _encoding(f.read(4))
        if encoding == "utf-8":
            return fmt, read_jsonl_utf8(path, max_row_bytes, skip)
        return fmt, _with_file(path, read_jsonl, max_row_bytes)
    if fmt == "csv":
        return fmt, _with_file(path, read_csv, max_row_bytes)
    raise DatasetUnusable(f"unknown file format {fmt!r}")


def _with_file(path: Path, reader: Any, max_row_bytes: int) -> Iterator[Record]:
    with open(path, "rb") as f:
        encoding, skip = _encoding(f.read(4))
        f.seek(0)
        yield from reader(f, max_row_bytes, encoding, skip)
