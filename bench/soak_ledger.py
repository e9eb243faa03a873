"""The soak's own records, which the product never reads, and the counts made from them.

- The worker's ledger (`handler`, run by the local endpoint as
  `--handler bench.soak_ledger:handler`): the real trainer handler, and for each event it
  yields a line `{"seq", "type", "pid", "stage": "emitted"}` in
  `$SOAK_LEDGER_DIR/<job id>.jsonl` before handing it to runpod-python, and one with
  `"stage": "handed"` once runpod-python asks for the next item (it has streamed the
  previous one then). A retried worker re-sending logged events writes them again. This
  is the soak's "expected": what workers emitted, not the `events.jsonl` they upload
  (which the syncer itself falls back to at a job's end).
- The syncers' deliveries (`python -m bench.soak_ledger`, the soak's syncer: `core.syncer`
  with `core.jobs.sync`'s `pull` wrapped): each event a pull hands the syncer to insert,
  as a line `{"job", "seq", "source"}` (source `stream`, `output`: the final output, or
  `log`: the uploaded `events.jsonl`) in `$SOAK_DELIVERY_DIR/<pid>.jsonl`, written before
  the database sees it. With `SOAK_BACKFILL=off` the end-of-job backfill is switched off:
  the final output's events and the uploaded log are dropped from every pull, so what is
  stored is what `/stream` (the live path) delivered.
- `tally(emitted, deliveries, stored, statuses)`: lost (emitted, not stored), duplicated
  (the same (job, seq) delivered by `/stream` more than once, counted before the database's
  unique (job, seq) absorbs it), stuck (a job not ended), and the backfill's share.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def _append(path: Path, record: Mapping[str, Any]) -> None:
    # One write per line on a file opened for appending: whole lines, even from several
    # processes, and nothing buffered for a SIGKILL to drop.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------- the worker


def ledgered(items: Iterable[dict[str, Any]], ledger: Path) -> Iterator[dict[str, Any]]:
    """`items` (a handler's output) unchanged, each event written to `ledger` when it is
    emitted and again once it was handed over (module docstring)."""
    for item in items:
        is_event = isinstance(item, dict) and "seq" in item and "type" in item
        if is_event:
            line = {"seq": item["seq"], "type": item["type"], "pid": os.getpid()}
            _append(ledger, {**line, "stage": "emitted"})
        yield item
        if is_event:
            _append(ledger, {**line, "stage": "handed"})


def handler(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The trainer's RunPod handler with the soak's ledger (module docstring)."""
    from trainer.handler import handler as trainer_handler

    job_id = str((job.get("input") or {}).get("job_id") or job.get("id"))
    ledger = Path(os.environ["SOAK_LEDGER_DIR"]) / f"{job_id}.jsonl"
    yield from ledgered(trainer_handler(job), ledger)


def read_ledger(ledger_dir: Path) -> dict[str, dict[str, set[int]]]:
    """Per job, the seqs emitted and the seqs handed over."""
    out: dict[str, dict[str, set[int]]] = {}
    for path in sorted(ledger_dir.glob("*.jsonl")):
        stages: dict[str, set[int]] = {"emitted": set(), "handed": set()}
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                stages[rec["stage"]].add(int(rec["seq"]))
        out[path.stem] = stages
    return out


# --------------------------------------------------------------------------- the syncer


def recording_pull(real: Callable[..., Any], out: Path, backfill: bool) -> Callable[..., Any]:
    """`core.jobs.pull.pull`, writing each event it returns to `out` before the syncer
    stores it; without `backfill`, the final output's events and the uploaded log dropped."""
    from core.jobs.pull import parse_events

    def pull(client: Any, store: Any, owner: str, job_id: str, rid: str) -> Any:
        pulled = real(client, store, owner, job_id, rid)
        if not backfill:
            pulled.final_output, pulled.stored_events, pulled.stored_result = None, None, None
        output = pulled.final_output if isinstance(pulled.final_output, list) else []
        sources = (("stream", pulled.outputs), ("output", output), ("log", pulled.stored_events))
        for source, items in sources:
            for e in parse_events(items or []):
                _append(out, {"job": job_id, "seq": e.seq, "source": source})
        return pulled

    return pull


@contextmanager
def installed(delivery_dir: Path, backfill: bool) -> Iterator[None]:
    """This process's syncs pull through `recording_pull` (writing to `<pid>.jsonl` in
    `delivery_dir`) inside the block."""
    import importlib

    sync_module = importlib.import_module("core.jobs.sync")  # `core.jobs.sync` is a function
    delivery_dir.mkdir(parents=True, exist_ok=True)
    real = sync_module.pull
    sync_module.pull = recording_pull(real, delivery_dir / f"{os.getpid()}.jsonl", backfill)
    try:
        yield
    finally:
        sync_module.pull = real


def read_deliveries(delivery_dir: Path) -> list[tuple[str, int, str]]:
    """Every (job, seq, source) any syncer was handed, in no particular order."""
    out = []
    for path in sorted(delivery_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out.append((rec["job"], int(rec["seq"]), rec["source"]))
    return out


# --------------------------------------------------------------------------- the counts


def tally(
    emitted: Mapping[str, set[int]],
    deliveries: Iterable[tuple[str, int, str]],
    stored: Mapping[str, Sequence[int]],
    statuses: Mapping[str, str],
) -> dict[str, int]:
    """The soak's event counts over the jobs in `statuses` (module docstring):
    `lost`, `duplicated` (before the database's constraint), `stuck`, and
    `stored_not_emitted` (stored events no worker emitted), `stored_twice` (what the
    constraint let through), `stream_deliveries`, `backfill_deliveries` (by the final
    output or the uploaded log), `backfill_only` (events only the backfill delivered),
    `delivered_not_stored` (handed to a syncer that died before storing them)."""
    stream: Counter = Counter()
    backfill: Counter = Counter()
    for job, seq, source in deliveries:
        if job in statuses:
            (stream if source == "stream" else backfill)[(job, seq)] += 1
    counts: Counter = Counter()
    kept: set[tuple[str, int]] = set()
    for job, status in statuses.items():
        expected, got = set(emitted.get(job, ())), list(stored.get(job, ()))
        kept |= {(job, s) for s in got}
        counts["events_emitted"] += len(expected)
        counts["events_stored"] += len(set(got))
        counts["lost"] += len(expected - set(got))
        counts["stored_not_emitted"] += len(set(got) - expected)
        counts["stored_twice"] += len(got) - len(set(got))
        counts["stuck"] += status not in TERMINAL
    counts["stream_deliveries"] = sum(stream.values())
    counts["duplicated"] = sum(n - 1 for n in stream.values())
    counts["backfill_deliveries"] = sum(backfill.values())
    counts["backfill_only"] = len(set(backfill) - set(stream))
    counts["delivered_not_stored"] = len((set(stream) | set(backfill)) - kept)
    return dict(counts)


def lost_never_handed(
    ledger: Mapping[str, Mapping[str, set[int]]], stored: Mapping[str, Sequence[int]]
) -> int:
    """Lost events that the worker emitted but never saw handed over (killed in between)."""
    n = 0
    for job, stages in ledger.items():
        n += len(stages["emitted"] - stages["handed"] - set(stored.get(job, ())))
    return n


def main() -> None:
    """The soak's syncer: `core.syncer` with its deliveries recorded (module docstring)."""
    from core import syncer

    backfill = os.environ.get("SOAK_BACKFILL", "on") != "off"
    with installed(Path(os.environ["SOAK_DELIVERY_DIR"]), backfill):
        syncer.main()


if __name__ == "__main__":
    main()
