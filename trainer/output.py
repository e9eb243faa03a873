"""Delivering results: the event log, uploads to signed URLs, copies to folders.

Upload keys are file names: "adapter_model.safetensors", "adapter_config.json",
"brightrun.json" (the adapter folder) and "events.jsonl", "result.json" (the full event
log and the final result, uploaded whether the job succeeds or fails). Each file is sent
as one plain HTTP PUT of its bytes with a content type; 5xx answers and network errors are
retried with backoff, 4xx answers are not (a signed URL that is refused stays refused).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from trainer.shared.errors import UploadFailed
from trainer.shared.spec import Event

log = logging.getLogger("brightrun.trainer")

CONTENT_TYPES = {
    ".safetensors": "application/octet-stream",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
}


class EventLog:
    """Numbers events, keeps them, and appends each to a JSONL file.

    A job started again finds its earlier attempts' log in that file and continues their
    numbering, from `start_seq` at the least (the first number the controller has not
    stored). Logged events at or above `start_seq` were emitted but never reached the
    controller (e.g. the worker was stopped before its last output was read): they are
    `unreported`, and the worker sends them again before anything new.
    """

    def __init__(self, path: Path | None = None, start_seq: int = 0) -> None:
        self.path = path
        self.events: list[Event] = []
        logged: list[Event] = []
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    logged.append(Event.model_validate_json(line))
        self.unreported = [e for e in logged if e.seq >= start_seq]
        self.next_seq = max([start_seq, *(e.seq + 1 for e in logged)])

    def emit(self, type_: str, data: dict[str, Any]) -> Event:
        event = Event(seq=self.next_seq, type=type_, data=data)
        self.next_seq += 1
        self.events.append(event)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(event.model_dump_json() + "\n")
        return event

    def write_all(self, path: Path) -> Path:
        """The full log (earlier attempts included when there is a log file) at `path`."""
        if self.path is not None and self.path.is_file():
            shutil.copyfile(self.path, path)
        else:
            path.write_text("".join(e.model_dump_json() + "\n" for e in self.events))
        return path


def put_file(url: str, path: Path, *, attempts: int = 3, timeout: float = 300.0) -> None:
    """PUT one file to a (signed) URL; raises `UploadFailed` naming the file."""
    import httpx

    ctype = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(8.0, 0.5 * 2**attempt))
        try:
            with path.open("rb") as f:
                r = httpx.put(  # the file streamed, not read into memory (a GGUF is large)
                    url,
                    content=f,
                    headers={"content-type": ctype, "x-upsert": "true"},
                    timeout=timeout,
                )
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            last = type(e).__name__  # never the exception's text: it may quote the URL
            continue
        if r.status_code < 300:
            return
        last = f"HTTP {r.status_code}"
        if r.status_code < 500 and r.status_code != 429:
            break
    raise UploadFailed(f"uploading {path.name} failed: {last}")


def upload_files(files: dict[str, Path], urls: dict[str, str]) -> list[str]:
    """Upload each file that has a URL; returns the names uploaded."""
    done = []
    for name, path in files.items():
        if name in urls:
            put_file(urls[name], path)
            done.append(name)
    return done


def copy_folder(src: Path, dest: Path) -> Path:
    """Copy `src`'s files into `dest`, replacing it as a whole (never half-written)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


def folder_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}


def safe_upload_log(files: dict[str, Path], urls: dict[str, str]) -> list[str]:
    """Upload the event log and result; a failure here is logged, never raised."""
    try:
        return upload_files(files, urls)
    except UploadFailed as e:
        log.error("could not upload the event log: %s", e.message)
        return []
