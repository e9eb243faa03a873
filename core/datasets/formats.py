"""Reading dataset files as a stream of records, in memory bounded by a constant.

`open_records(path, max_row_bytes)` detects the file format and yields `Record`s
(`core.datasets.records`): the 1-based row number, the parsed value (normally a dict) or
`None`, and a problem when the row could not be read. Never raises on bad content: a file that cannot be read at all
raises `DatasetUnusable` with the reason, up front, and a read that has to stop part way
(a CSV line beyond the limit) ends with a `Record` whose problem says so.

Formats, in the order detection tries them:
- Parquet: the `PAR1` magic. Read in batches of rows (one row group at a time at most).
- JSON array (first character `[`): elements streamed by a scanner that never holds more
  than one element (`max_row_bytes` characters); elements larger than that are skipped
  (`core.datasets.json_array`).
- JSON document (`{` spanning several lines): read whole only up to 64 MB; a top-level
  list under `data`/`rows`/`train`/`examples`/`records` (or the only list) gives the rows.
- JSONL (`{` and the first line is a whole JSON value): one row per line; blank lines are
  skipped; row numbers are line numbers; lines longer than `max_row_bytes` are skipped
  without being read into memory.
- CSV/TSV (extension `.csv`/`.tsv`, or a header line with a known column): one row per
  record after the header, the delimiter sniffed from the header; cells holding JSON
  lists (`messages`, `conversations`, `history`) are parsed.
- Plain text (extension `.txt`, content not JSON): a `{"text"}` row per document. The rule
  is the file's (`text_rule`): when blank lines separate paragraphs, documents are the
  runs of lines between blank lines ("paragraphs"; rows are counted by document);
  otherwise each line is one document ("lines"; rows are line numbers). A document
  longer than `max_row_bytes` is skipped with a `too_long` problem.
The extension is only a hint; the content decides. Text is UTF-8 (a UTF-8 or UTF-16 byte
order mark is honoured); bytes that are not UTF-8 make that row's problem `not_utf8`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from core.datasets.json_array import read_json_array
from core.datasets.records import (
    PIECE,
    Problem,
    Record,
    bad_record,
    capped_lines,
    encoding_of,
    is_utf8,
    not_utf8,
    parse_json,
    sized_record,
    text_stream,
    too_long,
)
from core.errors import DatasetUnusable

FORMATS = ("jsonl", "json", "csv", "parquet", "txt")
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


# --------------------------------------------------------------------------- detection


def _decode(head: bytes) -> str:
    """The first bytes of a file as text, without the byte order mark."""
    encoding, skip = encoding_of(head)
    if encoding == "utf-8":
        return head[skip:].decode("utf-8", errors="replace")
    return head.decode("utf-16", errors="replace")


def _sniff(path: Path, n: int = _SNIFF) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def detect_format(path: Path) -> str:
    """One of FORMATS, or raise DatasetUnusable saying why the file is none of them."""
    if path.stat().st_size == 0:
        raise DatasetUnusable("the file is empty")
    head = _sniff(path)
    ext = path.suffix.lower()
    if head.startswith(b"PAR1"):
        return "parquet"
    if ext == ".parquet":
        raise DatasetUnusable("the file is named .parquet but is not a Parquet file")
    if encoding_of(head)[0] == "utf-8" and b"\x00" in head:
        raise DatasetUnusable("the file is binary, not JSON, JSONL, CSV or Parquet text")
    stripped = _decode(head).lstrip()
    if ext in (".csv", ".tsv"):
        return "csv"
    if not stripped:
        raise DatasetUnusable("the file holds only whitespace")
    if stripped[0] == "[":
        return "json"
    if stripped[0] == "{":
        return _jsonl_or_json(stripped, whole=len(head) < _SNIFF)
    if ext == ".txt":
        return "txt"
    first = stripped.split("\n", 1)[0].lower()
    if any(col in first for col in _KNOWN_COLUMNS) and any(d in first for d in ",\t;|"):
        return "csv"
    raise DatasetUnusable(
        "the format is not recognised: expected JSONL (one JSON object per line), a JSON "
        "array, CSV with a header row, Parquet, or plain text named .txt"
    )


def _jsonl_or_json(stripped: str, whole: bool) -> str:
    """JSONL or one JSON document, for text that starts with `{` (`whole`: the sniffed text
    is the whole file)."""
    first_line = stripped.split("\n", 1)[0].strip()
    if _parses_as_json(first_line):
        return "jsonl"
    if len(first_line) >= len(stripped) - 1 and not whole:
        return "jsonl"  # a first line longer than the sniffed part: JSONL decides per row
    # JSONL rows start at the left margin; a pretty-printed document has one such '{'.
    if sum(1 for line in stripped.split("\n") if line.startswith("{")) >= 2:
        return "jsonl"
    return "json"


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- JSONL


def _jsonl(lines: Iterator[tuple[Any, int]], max_row_bytes: int) -> Iterator[Record]:
    """One record per line (the line number is the row); blank lines are skipped."""
    for lineno, (line, _n) in enumerate(lines, start=1):
        if line is None:
            yield too_long(lineno, max_row_bytes)
        elif not line.isspace():
            yield parse_json(line, lineno)


def read_jsonl(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    text = text_stream(f, encoding, skip)
    yield from _jsonl(capped_lines(text.readline, max_row_bytes, "\n"), max_row_bytes)


def read_jsonl_utf8(path: Path, max_row_bytes: int, skip: int = 0) -> Iterator[Record]:
    """UTF-8 JSONL without decoding to str first (orjson parses bytes and checks UTF-8)."""
    with open(path, "rb") as f:
        f.seek(skip)
        yield from _jsonl(capped_lines(f.readline, max_row_bytes, b"\n"), max_row_bytes)


def read_json_document(path: Path, max_row_bytes: int) -> Iterator[Record]:
    if path.stat().st_size > JSON_DOC_LIMIT:
        raise DatasetUnusable(
            f"a JSON file that is one object must be under {JSON_DOC_LIMIT // (1 << 20)} MB; "
            "save large datasets as JSONL or a JSON array"
        )
    raw = path.read_bytes()
    encoding, skip = encoding_of(raw)
    try:
        doc = orjson.loads(raw[skip:]) if encoding == "utf-8" else json.loads(raw.decode("utf-16"))
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise DatasetUnusable(f"the file is not valid JSON ({type(e).__name__})") from None
    del raw
    for i, value in enumerate(_document_rows(doc), start=1):
        yield sized_record(i, value, max_row_bytes)


def _document_rows(doc: Any) -> list[Any]:
    """The rows of a JSON document: the list itself, the list under a known key (or the
    only list of objects), else the object as one row."""
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
    return rows


# --------------------------------------------------------------------------- CSV


class _LineTooLong(Exception):
    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


def read_csv(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    """Rows of a CSV/TSV file as dicts keyed by the header's columns."""
    csv.field_size_limit(max_row_bytes)
    source = _csv_lines(text_stream(f, encoding, skip), max_row_bytes)
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
    counts = {d: header_line.count(d) for d in (",", "\t", ";", "|")}
    delim = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    header = next(csv.reader([header_line], csv.excel, delimiter=delim))
    header = [h.strip().lstrip("\ufeff") for h in header]
    reader = csv.reader(_chain(header_line, source), csv.excel, delimiter=delim)
    next(reader)
    yield from _csv_records(reader, header, max_row_bytes)


def _csv_lines(text: IO[str], cap: int) -> Iterator[str]:
    for line, n in capped_lines(text.readline, cap, "\n"):
        if line is None:
            raise _LineTooLong(n)
        yield line


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _csv_records(reader: Iterator[list[str]], header: list[str], cap: int) -> Iterator[Record]:
    """One record per non-blank CSV record; a line over the limit or broken quoting ends
    the read with a record that says so."""
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _LineTooLong as e:
            yield bad_record(
                row + 1,
                "too_long",
                f"a CSV line of {e.length} characters is longer than the limit of {cap}; "
                "the rows after it were not read",
                stops=True,
            )
            return
        except csv.Error as e:
            yield bad_record(
                row + 1,
                "invalid_csv",
                f"the CSV cannot be read past here ({e}); the rows after it were not read",
                stops=True,
            )
            return
        if cells and any(c.strip() for c in cells):
            row += 1
            yield _csv_record(row, header, cells)


def _csv_record(row: int, header: list[str], cells: list[str]) -> Record:
    if len(cells) != len(header):
        return bad_record(
            row,
            "wrong_columns",
            f"the row has {len(cells)} cells but the header has {len(header)} columns",
        )
    if not all(is_utf8(c) for c in cells):
        return not_utf8(row)
    value: dict[str, Any] = dict(zip(header, cells, strict=True))
    for col in _JSON_LIST_CELLS:
        cell = value.get(col)
        if isinstance(cell, str) and cell.strip().startswith(("[", "{")):
            try:
                value[col] = orjson.loads(cell)
            except orjson.JSONDecodeError:
                return bad_record(row, "invalid_json", f"the {col} cell is not valid JSON", col)
    return Record(row, value, raw_bytes=sum(len(c) for c in cells))


# --------------------------------------------------------------------------- Parquet


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
                yield sized_record(row, value, max_row_bytes)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        yield bad_record(
            row + 1,
            "invalid_parquet",
            f"the Parquet file cannot be read past here ({type(e).__name__}); "
            "the rows after it were not read",
            stops=True,
        )


# --------------------------------------------------------------------------- plain text


TEXT_RULES = {
    "lines": "one document per line (the file has no blank lines between paragraphs)",
    "paragraphs": "one document per paragraph (blank lines separate the documents)",
}


def text_rule(path: Path) -> str:
    """ "paragraphs" when a blank line stands between two non-blank lines of the text file
    at `path`, else "lines" (see `TEXT_RULES`). Reads the file once, a line at a time."""
    seen_text = blank_after_text = False
    with open(path, "rb") as f:
        encoding, skip = encoding_of(f.read(4))
        text = text_stream(f, encoding, skip)
        for line, _n in capped_lines(text.readline, PIECE, "\n"):
            if line is not None and not line.strip():
                blank_after_text = seen_text
            elif blank_after_text:
                return "paragraphs"
            else:
                seen_text = True
    return "lines"


def read_text_lines(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    """One `{"text"}` row per non-blank line; the row is the line number."""
    lines = capped_lines(text_stream(f, encoding, skip).readline, max_row_bytes, "\n")
    for lineno, (line, _n) in enumerate(lines, start=1):
        if line is None:
            yield too_long(lineno, max_row_bytes)
        elif line.strip():
            yield _document(lineno, [line], False, max_row_bytes)


def read_text_documents(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    """One `{"text"}` row per document: runs of lines between blank lines."""
    lines: list[str] = []
    size, row, over = 0, 0, False
    for line, n in capped_lines(text_stream(f, encoding, skip).readline, max_row_bytes, "\n"):
        if line is not None and not line.strip():
            if lines or over:
                row += 1
                yield _document(row, lines, over, max_row_bytes)
            lines, size, over = [], 0, False
            continue
        size += n
        over = over or line is None or size > max_row_bytes
        if not over:
            lines.append(line)
    if lines or over:
        yield _document(row + 1, lines, over, max_row_bytes)


def _document(row: int, lines: list[str], over: bool, max_row_bytes: int) -> Record:
    if over:
        return too_long(row, max_row_bytes)
    text = "".join(lines).strip("\r\n")
    if not is_utf8(text):
        return not_utf8(row)
    return Record(row, {"text": text}, raw_bytes=len(text))


# --------------------------------------------------------------------------- opening

Reader = Callable[[IO[bytes], int, str, int], Iterator[Record]]
_TEXT_READERS: dict[str, Reader] = {
    "json": read_json_array,
    "jsonl": read_jsonl,
    "csv": read_csv,
    "txt": read_text_documents,
}


def open_records(
    path: Path, max_row_bytes: int, file_format: str | None = None, rule: str | None = None
) -> tuple[str, Iterator[Record]]:
    """(format, records). Raises DatasetUnusable when the file cannot be read at all.
    `rule` is a text file's (`text_rule`, found here when not given)."""
    fmt = file_format or detect_format(path)
    if fmt == "txt" and (rule or text_rule(path)) == "lines":
        return fmt, _with_file(path, read_text_lines, max_row_bytes)
    if fmt == "parquet":
        return fmt, read_parquet(path, max_row_bytes)
    if fmt == "json" and _decode(_sniff(path)).lstrip().startswith("{"):
        return fmt, read_json_document(path, max_row_bytes)
    if fmt == "jsonl":
        encoding, skip = encoding_of(_sniff(path, 4))
        if encoding == "utf-8":
            return fmt, read_jsonl_utf8(path, max_row_bytes, skip)
    if fmt not in _TEXT_READERS:
        raise DatasetUnusable(f"unknown file format {fmt!r}")
    return fmt, _with_file(path, _TEXT_READERS[fmt], max_row_bytes)


def _with_file(path: Path, reader: Reader, max_row_bytes: int) -> Iterator[Record]:
    with open(path, "rb") as f:
        encoding, skip = encoding_of(f.read(4))
        f.seek(0)
        yield from reader(f, max_row_bytes, encoding, skip)
