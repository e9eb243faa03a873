"""The soak's checks can fail: its ledger, delivery records and counts
(`bench.soak_ledger`) find an injected loss, an injected duplicate delivery (one the
database's unique (job, seq) would absorb) and a stuck job, for two jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import soak_ledger
from core.jobs.pull import Pulled


def _events(n: int) -> list[dict[str, Any]]:
    types = ["started"] + ["metrics"] * (n - 2) + ["completed"]
    return [{"seq": i, "type": t, "ts": 1.0 + i, "data": {}} for i, t in enumerate(types)]


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Any]:
    """Two jobs of four events each: emitted through the worker's ledger, pulled through
    the syncer's recording `pull` (two pulls per job, the stream split between them)."""
    ledger, deliveries = tmp_path / "ledger", tmp_path / "deliveries"
    ledger.mkdir()
    deliveries.mkdir()
    streams: dict[str, list[list[dict[str, Any]]]] = {}
    for job in ("job-a", "job-b"):
        sent = list(
            soak_ledger.ledgered([*_events(4), {"error": "not an event"}], ledger / f"{job}.jsonl")
        )
        assert sent[-1] == {"error": "not an event"}  # the handler's output passes unchanged
        streams[job] = [sent[:2], sent[2:4]]
    return {"ledger": ledger, "deliveries": deliveries, "streams": streams}


def _pull_all(run: dict[str, Any], streams: dict[str, list[list[dict[str, Any]]]]) -> None:
    answers = {job: iter(parts) for job, parts in streams.items()}

    def real(client: Any, store: Any, owner: str, job_id: str, rid: str) -> Pulled:
        return Pulled(outputs=list(next(answers[job_id])), status="IN_PROGRESS")

    pull = soak_ledger.recording_pull(real, run["deliveries"] / "1.jsonl", backfill=True)
    for job, parts in streams.items():
        for _ in parts:
            pull(None, None, "owner", job, "rid")


def _tally(run: dict[str, Any], stored: dict[str, list[int]], statuses: dict[str, str]):
    ledger = soak_ledger.read_ledger(run["ledger"])
    emitted = {job: stages["emitted"] for job, stages in ledger.items()}
    return soak_ledger.tally(
        emitted, soak_ledger.read_deliveries(run["deliveries"]), stored, statuses
    )


ENDED = {"job-a": "COMPLETED", "job-b": "COMPLETED"}
WHOLE = {"job-a": [0, 1, 2, 3], "job-b": [0, 1, 2, 3]}


def test_a_clean_run_counts_nothing(run) -> None:
    _pull_all(run, run["streams"])
    got = _tally(run, WHOLE, ENDED)
    assert (got["lost"], got["duplicated"], got["stuck"]) == (0, 0, 0)
    assert got["events_emitted"] == got["events_stored"] == got["stream_deliveries"] == 8


def test_an_injected_loss_is_counted(run) -> None:
    _pull_all(run, run["streams"])
    stored = {**WHOLE, "job-b": [0, 1, 3]}  # event 2 of job-b never stored
    got = _tally(run, stored, ENDED)
    assert got["lost"] == 1 and got["delivered_not_stored"] == 1


def test_a_loss_the_worker_never_reported_is_counted_too(run) -> None:
    """Expected events come from the ledger, not from what the endpoint or the uploaded
    log carried: an event that reached no syncer at all is lost as well."""
    streams = {**run["streams"], "job-a": [run["streams"]["job-a"][0], []]}  # 2, 3 never streamed
    _pull_all(run, streams)
    got = _tally(run, {**WHOLE, "job-a": [0, 1]}, ENDED)
    assert got["lost"] == 2 and got["delivered_not_stored"] == 0


def test_an_injected_duplicate_delivery_is_counted_before_the_constraint(run) -> None:
    a = run["streams"]["job-a"]
    streams = {**run["streams"], "job-a": [a[0], [a[0][1], *a[1]]]}  # seq 1 streamed twice
    _pull_all(run, streams)
    got = _tally(run, WHOLE, ENDED)  # the database kept one of each
    assert got["duplicated"] == 1 and got["stored_twice"] == 0 and got["lost"] == 0


def test_a_stuck_job_is_counted(run) -> None:
    _pull_all(run, run["streams"])
    got = _tally(run, WHOLE, {**ENDED, "job-b": "IN_PROGRESS"})
    assert got["stuck"] == 1


def test_the_backfill_switched_off_delivers_only_the_stream(tmp_path: Path) -> None:
    events = _events(4)

    def real(*_: Any) -> Pulled:
        return Pulled(
            outputs=events[:1], status="FAILED", final_output=events, stored_events=events
        )

    for backfill, sources in ((False, ["stream"]), (True, ["stream"] + ["output", "log"] * 4)):
        folder = tmp_path / str(backfill)
        folder.mkdir()
        pull = soak_ledger.recording_pull(real, folder / "1.jsonl", backfill)
        pulled = pull(None, None, "owner", "job-a", "rid")
        assert len(pulled.events()) == len(sources)  # what the syncer would insert
        got = sorted(source for _, _, source in soak_ledger.read_deliveries(folder))
        assert got == sorted(sources)
