"""Stored datasets: add (inspect, normalise and store), list, get, rename, delete, preview.

Files go to the `datasets` bucket under `<user id>/<dataset id>/`; the row goes through
`core.repo`, scoped to the actor. A file with bad rows is refused (`DatasetUnusable`, with
the report) unless the caller chose to drop them; below `MIN_ROWS_FOR_EVAL` valid rows
there is no eval split. Errors: `DatasetUnusable`, `InvalidInput` for bad arguments,
`NotFound`/`Conflict` from `core.repo`.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Literal

import orjson

from core import repo, storage, validation
from core.datasets.ingest import (
    DEFAULT_EVAL_FRACTION,
    DEFAULT_MAX_ROW_BYTES,
    Report,
    clip_row,
    process_file,
)
from core.datasets.tokens import DEFAULT_MAX_LENGTH, DEFAULT_TOKEN_ROWS, TokenizerChoice
from core.errors import DatasetUnusable, InvalidInput
from core.users import Actor

MIN_ROWS_FOR_EVAL = 20
_CONTENT_TYPES = {
    "jsonl": "application/x-ndjson", "json": "application/json", "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}  # fmt: skip

OnBadRows = Literal["reject", "drop"]

_NAME_FROM_FILE = re.compile(r"[^\w .()-]+")


def name_from_filename(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).name
    for ext in (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    cleaned = " ".join(_NAME_FROM_FILE.sub(" ", stem).split())[:120]
    return cleaned or "dataset"


def add_dataset(
    actor: Actor,
    session: Any,
    store: storage.BlobStore,
    path: Path | str,
    name: str | None = None,
    *,
    original_filename: str | None = None,
    tokenizer: Any = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    on_bad_rows: OnBadRows = "reject",
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    max_bytes: int | None = None,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
) -> tuple[Any, Report]:
    """Inspect, normalise and store a dataset for `actor`; returns (dataset row, report).

    Stored (bucket `datasets`): the original file unchanged, `normalized.jsonl` (the train
    rows) and, when there is an eval split, `eval.jsonl`; their keys are in the row
    (`original_key`, `normalized_key`) and `stats["split"]["eval_key"]`. With
    `on_bad_rows="reject"` (the default) a file with any bad row raises `DatasetUnusable`
    and nothing is stored; with "drop" the valid rows are kept and the report lists the rest.
    The caller commits the session; if storing fails nothing is left behind.
    """
    path = Path(path)
    if on_bad_rows not in ("reject", "drop"):
        raise InvalidInput("on_bad_rows must be 'reject' or 'drop'")
    # display only (keys are built from ids), but a path, control characters or >255 chars are refused
    original_filename = validation.check_upload_filename(original_filename or path.name)
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(
            f"the file is {size / 1e6:.1f} MB; the upload limit is {max_bytes / 1e6:.0f} MB"
        )
    choice = (
        tokenizer
        if isinstance(tokenizer, TokenizerChoice) or tokenizer is None
        else TokenizerChoice(getattr(tokenizer, "name_or_path", "tokenizer"), tokenizer)
    )
    explicit_name = name is not None
    name = name if explicit_name else name_from_filename(original_filename)
    if not explicit_name:
        taken = {d.name for d in repo.list_datasets(actor, session)}
        base, k = name, 2
        while name in taken:
            name, k = f"{base} ({k})", k + 1
    with tempfile.TemporaryDirectory(prefix="brightrun-ds-") as tmp:
        train_p, eval_p = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        with open(train_p, "wb") as tf, open(eval_p, "wb") as ef:
            report = process_file(
                path, tokenizer=choice, max_length=max_length, max_row_bytes=max_row_bytes,
                eval_fraction=eval_fraction, token_rows=token_rows, train_out=tf, eval_out=ef,
            )  # fmt: skip
        if not report.usable:
            raise DatasetUnusable(report.why_unusable(), report=report)
        if report.invalid_rows and on_bad_rows == "reject":
            top = ", ".join(f"{k} ({n})" for k, n in report.problem_counts.most_common(3))
            first = report.problem_examples[0]
            raise DatasetUnusable(
                f"{report.invalid_rows} of {report.rows} rows have problems ({top}); first: row {first.row}: "
                f"{first.message}. Fix the file, or choose to drop the bad rows",
                report=report,
            )
        if report.read_stopped and on_bad_rows == "reject":
            raise DatasetUnusable(
                "the file could not be read to the end; fix it or choose to drop the bad rows",
                report=report,
            )
        if 0 < report.valid_rows < MIN_ROWS_FOR_EVAL and report.eval_rows:
            with (
                open(train_p, "ab") as tf,
                open(eval_p, "rb") as ef,
            ):  # too few rows to hold any out
                tf.write(ef.read())
            report.train_rows += report.eval_rows
            report.eval_rows = 0
        dataset_id = repo.new_id("ds")
        keys = {
            "original": storage.dataset_original_key(actor.user_id, dataset_id),
            "train": storage.dataset_normalized_key(actor.user_id, dataset_id),
            "eval": f"{actor.user_id}/{dataset_id}/eval.jsonl",
        }
        sha = storage.sha256_file(path)
        written: list[str] = []
        try:
            store.put_file(
                "datasets",
                keys["original"],
                path,
                _CONTENT_TYPES.get(report.file_format or "", "application/octet-stream"),
            )
            written.append(keys["original"])
            store.put_file("datasets", keys["train"], train_p, "application/x-ndjson")
            written.append(keys["train"])
            if report.eval_rows:
                store.put_file("datasets", keys["eval"], eval_p, "application/x-ndjson")
                written.append(keys["eval"])
            stats = report.to_dict()
            stats["split"]["eval_key"] = keys["eval"] if report.eval_rows else None
            stats["on_bad_rows"] = on_bad_rows
            with session.begin_nested():
                ds = repo.create_dataset(
                    actor, session, name=name, file_format=report.file_format or "", layout=report.layout or "",
                    rows=report.rows, valid_rows=report.valid_rows, original_filename=original_filename,
                    size_bytes=size, sha256=sha, stats=stats, original_key=keys["original"],
                    normalized_key=keys["train"], dataset_id=dataset_id,
                )  # fmt: skip
        except BaseException:
            store.delete("datasets", written)
            raise
    return ds, report


def list_datasets(actor: Actor, session: Any) -> list[Any]:
    return repo.list_datasets(actor, session)


def get_dataset(actor: Actor, session: Any, dataset_id: str) -> Any:
    return repo.get_dataset(actor, session, dataset_id)


def rename_dataset(actor: Actor, session: Any, dataset_id: str, new_name: str) -> Any:
    return repo.rename_dataset(actor, session, dataset_id, new_name)


def delete_dataset(actor: Actor, session: Any, store: storage.BlobStore, dataset_id: str) -> Any:
    """Mark the dataset deleted (kept as a name in job history) and remove its files.
    Refused (Conflict) while an unfinished job uses it."""
    ds = repo.mark_dataset_deleted(actor, session, dataset_id)
    session.flush()
    store.delete_prefix("datasets", f"{actor.user_id}/{ds.id}/")
    return ds


def eval_key(ds: Any) -> str | None:
    return (ds.stats or {}).get("split", {}).get("eval_key")


def preview_rows(
    actor: Actor, session: Any, store: storage.BlobStore, dataset_id: str, n: int = 20,
    split: Literal["train", "eval"] = "train", max_chars: int = 2000,
) -> list[dict[str, Any]]:  # fmt: skip
    """The first `n` normalised rows of the actor's dataset (contents clipped to
    `max_chars`). They are data, to be shown as text, never rendered as HTML/markdown."""
    ds = repo.get_dataset(actor, session, dataset_id)
    key = ds.normalized_key if split == "train" else eval_key(ds)
    if not key:
        return []
    out: list[dict[str, Any]] = []
    with store.open("datasets", key) as f:
        while len(out) < n:
            line = f.readline(DEFAULT_MAX_ROW_BYTES + 1)
            if not line:
                break
            out.append(clip_row(orjson.loads(line), max_chars))
    return out
