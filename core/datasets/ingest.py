"""Ingest: read, validate, normalise and measure a dataset file in one streaming pass.

`process_file` detects the file format (`core.datasets.formats`) and the layout
(`core.datasets.layouts`) from the first rows, normalises every row, writes the valid rows
to the train and eval outputs, counts problems per kind (the first `MAX_EXAMPLES` kept as
examples), counts exact duplicates and measures tokens (`core.datasets.tokens`). The whole
row (raw) may be at most `max_row_bytes` characters. It never raises on file content: a
file that cannot be used gets a `Report.reason`.

Nothing a row says is dropped in silence (`core.datasets.census`): a key the layout does
not read is listed in `ignored_keys` with its count, and a key known to carry training
meaning that is not honoured here is the row's problem (`unhonoured_key`). The report
also says how a text file was cut into documents (`text_rule`) and sums up the scores
preference rows carry (`scores`).

Rows are split into train and eval by a hash of the normalised row (`eval_fraction`,
default 5%), so duplicates never straddle the split. Memory stays bounded: rows stream
through one at a time; per row only an 8-byte hash is kept (for exact duplicates), plus
token lengths of the measured rows.
"""

from __future__ import annotations

import itertools
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from core.datasets.agent_counts import AgentCounts
from core.datasets.census import KeyCensus, describe
from core.datasets.formats import TEXT_RULES, detect_format, open_records, text_rule
from core.datasets.preference import ScoreCounts
from core.datasets.preference import detect_any_layout as detect_layout
from core.datasets.preference import normalise_any_row as normalise_row
from core.datasets.records import Problem, Record
from core.datasets.tokens import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_TOKEN_ROWS,
    TokenizerChoice,
    TokenStats,
    as_choice,
    require_max_length,
)
from core.errors import DatasetUnusable, InvalidInput

DEFAULT_MAX_ROW_BYTES = 4 * 1024 * 1024
DEFAULT_EVAL_FRACTION = 0.05
MAX_EXAMPLES = 100
_DETECT_ROWS = 64


@dataclass
class Report:
    """What inspecting a file found. `to_dict()` is the `--json` output."""

    path: str = ""
    file_format: str | None = None
    layout: str | None = None
    rows: int = 0
    valid_rows: int = 0
    problem_counts: Counter[str] = field(default_factory=Counter)
    problem_examples: list[Problem] = field(default_factory=list)
    reason: str | None = None  # why the file cannot be used at all
    size_bytes: int = 0
    duplicates: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    eval_fraction: float = 0.0
    tokens: dict[str, Any] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)  # tools, calls, reasoning (counts)
    ignored_keys: list[dict[str, Any]] = field(default_factory=list)  # {key, where, count}
    text_rule: str | None = None  # a text file's documents: "lines" or "paragraphs"
    scores: dict[str, Any] = field(default_factory=dict)  # preference rows' scores
    samples: list[dict[str, Any]] = field(default_factory=list)
    read_stopped: bool = False  # reading ended early at a row the reader could not pass

    @property
    def invalid_rows(self) -> int:
        return self.rows - self.valid_rows

    @property
    def usable(self) -> bool:
        return self.reason is None and self.valid_rows > 0

    def why_unusable(self) -> str:
        if self.reason:
            return self.reason
        if self.valid_rows == 0:
            top = ", ".join(f"{k} ({n})" for k, n in self.problem_counts.most_common(3))
            first = self.problem_examples[0].message if self.problem_examples else ""
            return f"no valid rows among {self.rows}: {top}" + (
                f"; row {self.problem_examples[0].row}: {first}" if first else ""
            )
        return ""

    def notes(self) -> list[str]:
        """What the report says besides problems: how text was cut into documents, the
        keys no row's training reads, and what the tokens say (reasoning the model's chat
        template does not render)."""
        out = [f"text: {TEXT_RULES[self.text_rule]}"] if self.text_rule else []
        out += [f"not used: {describe(e)}" for e in self.ignored_keys]
        return out + [f"tokens: {n}" for n in self.tokens.get("notes") or []]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.file_format,
            "layout": self.layout,
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "invalid_rows": self.invalid_rows,
            "usable": self.usable,
            "reason": self.why_unusable() or None,
            "problems": dict(sorted(self.problem_counts.items())),
            "problem_examples": [p.as_dict() for p in self.problem_examples],
            "read_stopped": self.read_stopped,
            "size_bytes": self.size_bytes,
            "duplicates": self.duplicates,
            "split": {
                "eval_fraction": self.eval_fraction,
                "train_rows": self.train_rows,
                "eval_rows": self.eval_rows,
            },
            "tokens": self.tokens,
            "agent": self.agent,
            "ignored_keys": self.ignored_keys,
            "notes": self.notes(),
            "text_rule": self.text_rule,
            "scores": self.scores,
            "samples": self.samples,
        }


def split_of(line: bytes, eval_fraction: float) -> str:
    """Which side of the split a normalised row (its JSONL line, newline included) is on.
    Rows are hashed with CRC-32; Adler-32 joins it into the 64-bit duplicate hash."""
    return "eval" if zlib.crc32(line) % 100_000 < eval_fraction * 100_000 else "train"


def clip_row(row: dict[str, Any], n: int = 500) -> dict[str, Any]:
    """A normalised row with every text cut to `n` characters, to show."""
    if "text" in row:
        return {"text": row["text"][:n]}

    def clip(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in msgs:
            clipped = {**m, "content": m["content"][:n]}
            if "reasoning_content" in m:
                clipped["reasoning_content"] = m["reasoning_content"][:n]
            out.append(clipped)
        return out

    # messages (with the row's tools), a preference pair's prompt/chosen/rejected (and
    # scores), or a KTO row's prompt/completion and label
    return {k: (clip(v) if isinstance(v, list) and k != "tools" else v) for k, v in row.items()}


def process_file(
    path: Path,
    *,
    tokenizer: TokenizerChoice | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
    train_out: IO[bytes] | None = None,
    eval_out: IO[bytes] | None = None,
    layout: str | None = None,
    n_samples: int = 3,
) -> Report:
    """Read, validate and normalise `path` in one streaming pass. Writes valid rows to
    `train_out` / `eval_out` when given. Never raises on file content."""
    require_max_length(max_length)
    if not 0.0 <= eval_fraction <= 0.5:
        raise InvalidInput("eval fraction must be between 0 and 0.5")
    path = Path(path)
    report = Report(path=str(path), eval_fraction=eval_fraction)
    opened = _open(path, max_row_bytes, layout, report)
    if opened is None:
        return report
    head, rest = opened
    if report.layout is None:
        _explain_no_layout(report, head)
        return report
    stats = TokenStats(tokenizer, max_length, token_rows)
    counts, census, scores = AgentCounts(), KeyCensus(report.layout), ScoreCounts()
    outputs = (train_out, eval_out)
    measures = (stats, counts, census, scores)
    hashes = _stream(itertools.chain(head, rest), report, measures, outputs, n_samples)
    report.agent = counts.result()
    report.ignored_keys = census.result()
    report.scores = scores.result()
    report.duplicates = _duplicates(hashes)
    report.tokens = stats.result(report.valid_rows)
    return report


def _open(
    path: Path, max_row_bytes: int, layout: str | None, report: Report
) -> tuple[list[Record], Iterator[Record]] | None:
    """The first rows (until `_DETECT_ROWS` are readable) and the rest, the format and the
    layout (detected from those rows unless given) in the report; None, with the report's
    reason, when the file cannot be read at all."""
    try:
        report.size_bytes = path.stat().st_size
        fmt = detect_format(path)
        report.text_rule = text_rule(path) if fmt == "txt" else None
        report.file_format, records = open_records(path, max_row_bytes, fmt, report.text_rule)
        rest = iter(records)
        head: list[Record] = []
        readable = 0
        for rec in rest:
            head.append(rec)
            readable += rec.problem is None
            if readable >= _DETECT_ROWS:
                break
        report.layout = layout or detect_layout([r.value for r in head if r.problem is None])
    except DatasetUnusable as e:
        report.reason = str(e)
        return None
    except OSError as e:
        report.reason = f"the file cannot be read ({type(e).__name__})"
        return None
    return head, rest


def _explain_no_layout(report: Report, head: list[Record]) -> None:
    values = [r.value for r in head if r.problem is None and isinstance(r.value, dict)]
    fields = sorted({k for v in values for k in v})[:12]
    if not head:
        report.reason = "the file holds no rows"
    elif not fields:
        report.rows = len(head)
        for rec in head:
            if rec.problem:
                _note(report, rec.problem)
        report.reason = "no row could be read as an object with fields"
    else:
        report.reason = (
            "no known layout: expected a 'messages' (OpenAI chat), 'conversations' (ShareGPT), "
            "'instruction'+'output' (Alpaca), 'prompt'+'completion', 'text', preference "
            "'chosen'+'rejected' (with a 'prompt', or whole conversations), "
            "'chosen_messages'+'rejected_messages', or a KTO 'label' fields; found "
            + ", ".join(repr(f[:40]) for f in fields)
        )


def _stream(
    records: Iterable[Record],
    report: Report,
    measures: tuple[TokenStats, AgentCounts, KeyCensus, ScoreCounts],
    outputs: tuple[IO[bytes] | None, IO[bytes] | None],
    n_samples: int,
) -> array[int]:
    """Every row into the report, the token statistics and the (train, eval) outputs; the
    64-bit hash of each valid row. The hot loop: names it calls are bound locally."""
    hashes = array("Q")
    stats, counts, census, scores = measures
    dumps, normalise, note, count = orjson.dumps, normalise_row, _note, counts.add
    check_keys, count_scores = census.check, scores.add
    crc32, adler32 = zlib.crc32, zlib.adler32
    layout = report.layout or ""
    measure = stats.reason is None
    eval_cut = report.eval_fraction * 100_000
    write_train, write_eval = (out.write if out is not None else None for out in outputs)
    rows = valid = n_eval = 0
    stopped = False
    for rec in records:
        problem = rec.problem
        if problem is not None:
            stopped = stopped or rec.stops_reading
            if problem.row:  # row 0 is the file as a whole, not a row
                rows += 1
            note(report, problem)
            continue
        rows += 1
        unhonoured = check_keys(rec.value, rec.row)
        row, problems = (None, unhonoured) if unhonoured else normalise(rec.value, layout, rec.row)
        if row is None:
            for p in problems:
                note(report, p)
            continue
        if measure:
            refused = stats.add(row, rec.row)
            if refused is not None:  # the chat template refuses the row: not trained on
                note(report, refused)
                continue
        valid += 1
        count(row)
        if "scores" in row:
            count_scores(row)
        line = dumps(row) + b"\n"
        crc = crc32(line)  # see split_of
        hashes.append(crc | (adler32(line) << 32))
        if crc % 100_000 < eval_cut:
            n_eval += 1
            if write_eval is not None:
                write_eval(line)
        elif write_train is not None:
            write_train(line)
        if valid <= n_samples:
            report.samples.append(clip_row(row))
    report.rows, report.valid_rows, report.read_stopped = rows, valid, stopped
    report.eval_rows, report.train_rows = n_eval, valid - n_eval
    return hashes


def _duplicates(hashes: array[int]) -> int:
    """How many rows repeat an earlier one exactly (by their 64-bit hashes)."""
    if not hashes:
        return 0
    import numpy as np

    return len(hashes) - int(np.unique(np.frombuffer(hashes, dtype=np.uint64)).size)


def _note(report: Report, p: Problem) -> None:
    report.problem_counts[p.kind] += 1
    if len(report.problem_examples) < MAX_EXAMPLES:
        report.problem_examples.append(p)


def inspect_file(
    path: Path | str,
    tokenizer: Any = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    *,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
) -> Report:
    """Detect, validate and measure a file without storing anything.

    `tokenizer` may be a `TokenizerChoice` (from `load_tokenizer`), a tokenizer object, or
    None (no token statistics)."""
    return process_file(
        Path(path),
        tokenizer=as_choice(tokenizer),
        max_length=max_length,
        max_row_bytes=max_row_bytes,
        eval_fraction=eval_fraction,
        token_rows=token_rows,
    )
