"""Stored datasets: add (inspect, normalise and store), list, get, rename, delete, preview.

Files go to the `datasets` bucket under `<user id>/<dataset id>/`; the row goes through
`core.db.repo`, scoped to the actor. A file with bad rows is refused (`DatasetUnusable`, with
the report) unless the caller chose to drop them; below `MIN_ROWS_FOR_EVAL` valid rows
there is no eval split. Errors: `DatasetUnusable`, `InvalidInput` for bad arguments,
`NotFound`/`Conflict` from `core.db.repo`.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from core import validation
from core.clients import storage
from core.datasets.ingest import (
    DEFAULT_EVAL_FRACTION,
    DEFAULT_MAX_ROW_BYTES,
    Report,
    clip_row,
    process_file,
)
from core.datasets.tokens import DEFAULT_MAX_LENGTH, DEFAULT_TOKEN_ROWS, as_choice
from core.db import repo
from core.errors import DatasetUnusable, InvalidInput
from core.users import Actor

MIN_ROWS_FOR_EVAL = 20
_CONTENT_TYPES = {
    "jsonl": "application/x-ndjson",
    "json": "application/json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}

OnBadRows = Literal["reject", "drop"]

_NAME_FROM_FILE = re.compile(r"[^\w .()-]+")


class _Upload(NamedTuple):
    """The file being added and what its row will say about it."""

    path: Path
    name: str
    original_filename: str
    size: int
    on_bad_rows: OnBadRows


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
    size = _check_size(path, max_bytes)
    choice = as_choice(tokenizer)
    if name is None:
        name = _free_name(actor, session, name_from_filename(original_filename))
    upload = _Upload(path, name, original_filename, size, on_bad_rows)
    with tempfile.TemporaryDirectory(prefix="brightrun-ds-") as tmp:
        train_p, eval_p = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        with open(train_p, "wb") as tf, open(eval_p, "wb") as ef:
            report = process_file(
                path,
                tokenizer=choice,
                max_length=max_length,
                max_row_bytes=max_row_bytes,
                eval_fraction=eval_fraction,
                token_rows=token_rows,
                train_out=tf,
                eval_out=ef,
            )
        _refuse_unless_usable(report, on_bad_rows)
        if 0 < report.valid_rows < MIN_ROWS_FOR_EVAL and report.eval_rows:
            _hold_out_nothing(report, train_p, eval_p)
        ds = _store(actor, session, store, upload, report, (train_p, eval_p))
    return ds, report


def _check_size(path: Path, max_bytes: int | None) -> int:
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(
            f"the file is {size / 1e6:.1f} MB; the upload limit is {max_bytes / 1e6:.0f} MB"
        )
    return size


def _free_name(actor: Actor, session: Any, name: str) -> str:
    """`name`, or `name (2)`, `name (3)`... when the actor has a dataset of that name."""
    taken = {d.name for d in repo.list_datasets(actor, session)}
    base, k = name, 2
    while name in taken:
        name, k = f"{base} ({k})", k + 1
    return name


def _refuse_unless_usable(report: Report, on_bad_rows: OnBadRows) -> None:
    """Raise `DatasetUnusable` for a file without valid rows, and for one with bad rows
    (or read only part way) unless the caller chose to drop them."""
    if not report.usable:
        raise DatasetUnusable(report.why_unusable(), report=report)
    if on_bad_rows != "reject":
        return
    if report.invalid_rows:
        top = ", ".join(f"{k} ({n})" for k, n in report.problem_counts.most_common(3))
        first = report.problem_examples[0]
        raise DatasetUnusable(
            f"{report.invalid_rows} of {report.rows} rows have problems ({top}); first: row {first.row}: "
            f"{first.message}. Fix the file, or choose to drop the bad rows",
            report=report,
        )
    if report.read_stopped:
        raise DatasetUnusable(
            "the file could not be read to the end; fix it or choose to drop the bad rows",
            report=report,
        )


def _hold_out_nothing(report: Report, train_p: Path, eval_p: Path) -> None:
    """Too few rows to hold any out: the eval rows join the train rows."""
    with open(train_p, "ab") as tf, open(eval_p, "rb") as ef:
        tf.write(ef.read())
    report.train_rows += report.eval_rows
    report.eval_rows = 0


def _store(
    actor: Actor,
    session: Any,
    store: storage.BlobStore,
    upload: _Upload,
    report: Report,
    normalised: tuple[Path, Path],
) -> Any:
    """Put the original and the (train, eval) files, then add the row; if anything fails,
    the files already put are deleted."""
    dataset_id = repo.new_id("ds")
    keys = {
        "original": storage.dataset_original_key(actor.user_id, dataset_id),
        "train": storage.dataset_normalized_key(actor.user_id, dataset_id),
        "eval": f"{actor.user_id}/{dataset_id}/eval.jsonl",
    }
    content_type = _CONTENT_TYPES.get(report.file_format or "", "application/octet-stream")
    files = [("original", upload.path, content_type)]
    files.append(("train", normalised[0], "application/x-ndjson"))
    if report.eval_rows:
        files.append(("eval", normalised[1], "application/x-ndjson"))
    sha = storage.sha256_file(upload.path)
    written: list[str] = []
    try:
        for part, file, type_ in files:
            store.put_file("datasets", keys[part], file, type_)
            written.append(keys[part])
        stats = report.to_dict()
        stats["split"]["eval_key"] = keys["eval"] if report.eval_rows else None
        stats["on_bad_rows"] = upload.on_bad_rows
        with session.begin_nested():
            return repo.create_dataset(
                actor,
                session,
                name=upload.name,
                file_format=report.file_format or "",
                layout=report.layout or "",
                rows=report.rows,
                valid_rows=report.valid_rows,
                original_filename=upload.original_filename,
                size_bytes=upload.size,
                sha256=sha,
                stats=stats,
                original_key=keys["original"],
                normalized_key=keys["train"],
                dataset_id=dataset_id,
            )
    except BaseException:
        store.delete("datasets", written)
        raise


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


def no_eval_split_reason(ds: Any) -> str:
    """Why a stored dataset has no eval split, by the rule that decided it when it was
    added: under `MIN_ROWS_FOR_EVAL` valid rows none are held out; else each row is held
    out by a hash of the row with the chance `eval_fraction`, so a small one may draw none."""
    split = (ds.stats or {}).get("split") or {}
    fraction = split.get("eval_fraction", DEFAULT_EVAL_FRACTION)
    rows = ds.valid_rows
    if getattr(ds, "deleted_at", None) is not None:
        return f"dataset {ds.name!r} was deleted, and its eval split with it"
    if rows < MIN_ROWS_FOR_EVAL:
        return (
            f"dataset {ds.name!r} has no eval split: it has {rows} rows, and datasets under "
            f"{MIN_ROWS_FOR_EVAL} rows hold none out"
        )
    if not fraction:
        return f"dataset {ds.name!r} has no eval split: it was added with an eval fraction of 0"
    return (
        f"dataset {ds.name!r} has no eval split: each of its {rows} rows was held out with a "
        f"{fraction * 100:g}% chance (by a hash of the row) and none was; add more rows, or "
        "evaluate on a dataset with an eval split"
    )


def preview_rows(
    actor: Actor,
    session: Any,
    store: storage.BlobStore,
    dataset_id: str,
    n: int = 20,
    split: Literal["train", "eval"] = "train",
    max_chars: int = 2000,
) -> list[dict[str, Any]]:
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
