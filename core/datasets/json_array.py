"""The streaming reader of a JSON array file: one element at a time, in memory bounded by
the row limit, whatever the file's size. Elements longer than `max_row_bytes` characters
are measured and skipped (`too_long`); an empty element is `invalid_json`; an array that
never closes ends with a problem that stops the read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

from core.datasets.records import (
    PIECE,
    Problem,
    Record,
    bad_record,
    parse_json,
    text_stream,
    too_long,
)

_STR_SPECIAL = re.compile(r'["\\]')
_STRUCT_SPECIAL = re.compile(r'["\[\]{},]')


class _ArrayScanner:
    """Cuts the text of a top-level JSON array into its elements, chunk by chunk, holding
    at most one element (`max_row_bytes` characters; a longer one is measured, not kept)."""

    def __init__(self, max_row_bytes: int) -> None:
        self.max_row_bytes = max_row_bytes
        self.depth = 0
        self.in_str = self.escape = False
        self.started = self.closed = False  # inside the top-level array; past its end
        self.parts: list[str] = []
        self.size = 0
        self.too_long = False
        self.index = 0

    def feed(self, chunk: str) -> Iterator[Record]:
        """The elements that end in `chunk`; the text of an unfinished one is kept."""
        pos, n = 0, len(chunk)
        start = 0 if self.started else n  # where the current element's text starts in chunk
        while pos < n and not self.closed:
            if self.escape:
                self.escape = False
                pos += 1
                continue
            if self.in_str:
                pos = self._past_string_special(chunk, pos)
                continue
            m = _STRUCT_SPECIAL.search(chunk, pos)
            if m is None:
                break
            c, pos = m.group(), m.end()
            if not self.started:
                if c == "[":
                    self.started, self.depth, start = True, 1, pos
            elif c == '"':
                self.in_str = True
            elif c in "[{":
                self.depth += 1
            elif c in "]}":
                self.depth -= 1
                if self.depth == 0:  # the array closed
                    self.closed = True
                    rec = self._element(chunk[start : pos - 1])
                    if rec is not None:
                        yield rec
            elif c == "," and self.depth == 1:
                yield self._element(chunk[start : pos - 1]) or self._empty_element()
                start = pos
        if self.started and not self.closed:
            self._take(chunk[start:])

    def finish(self) -> Iterator[Record]:
        """At the end of the file: the last element of an array that never closed, and
        the problem that says so."""
        if not self.started or self.closed:
            return
        rec = self._element("")
        if rec is not None:
            yield rec
        yield Record(
            self.index + 1,
            problem=Problem(
                0, "invalid_json", "", "the JSON array is not closed: the file may be cut short"
            ),
            stops_reading=True,
        )

    def _past_string_special(self, chunk: str, pos: int) -> int:
        m = _STR_SPECIAL.search(chunk, pos)
        if m is None:
            return len(chunk)
        if m.group() == "\\":
            self.escape = True
        else:
            self.in_str = False
        return m.end()

    def _take(self, piece: str) -> None:
        self.size += len(piece)
        if self.size > self.max_row_bytes:
            self.too_long = True
            self.parts = []
        elif piece:
            self.parts.append(piece)

    def _element(self, last_piece: str) -> Record | None:
        """The element whose text ends with `last_piece` (None when it is blank)."""
        self._take(last_piece)
        body = "".join(self.parts).strip()
        was_long = self.too_long
        self.parts, self.size, self.too_long = [], 0, False
        if not body and not was_long:
            return None
        self.index += 1
        if was_long:
            return too_long(self.index, self.max_row_bytes)
        return parse_json(body, self.index)

    def _empty_element(self) -> Record:
        self.index += 1
        return bad_record(self.index, "invalid_json", "an empty array element")


def read_json_array(
    f: IO[bytes], max_row_bytes: int, encoding: str = "utf-8", skip: int = 0
) -> Iterator[Record]:
    """Elements of a top-level JSON array, one at a time."""
    text = text_stream(f, encoding, skip)
    scanner = _ArrayScanner(max_row_bytes)
    while not scanner.closed:
        chunk = text.read(PIECE)
        if not chunk:
            break
        yield from scanner.feed(chunk)
    yield from scanner.finish()
