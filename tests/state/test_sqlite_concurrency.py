"""The local SQLite default is shared by the dashboard, the background syncer and the command
line at once: WAL journaling lets readers read while one writer writes, the busy timeout
makes a writer wait for another instead of failing, and every transaction takes the write
lock up front (BEGIN IMMEDIATE), so nobody sees `database is locked`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from core.db.session import create_db_engine

WRITERS, READERS, ROWS = 4, 4, 25


def test_concurrent_writers_and_readers_never_see_a_locked_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'brightrun.db'}"
    setup = create_db_engine(url)
    with setup.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE events (writer INTEGER, seq INTEGER, PRIMARY KEY (writer, seq))"
        )
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000

    errors: list[BaseException] = []
    seen: list[int] = []
    start = threading.Barrier(WRITERS + READERS + 1)
    done = threading.Event()
    midway = threading.Event()  # a reader has read while the writers were half way

    def writer(w: int) -> None:  # its own engine: a process of its own (dashboard, syncer, CLI)
        engine = create_db_engine(url)
        try:
            start.wait()
            for i in range(ROWS):
                if i == ROWS // 2:  # wait (holding no lock) until a reader has read mid-write
                    midway.wait(timeout=60)
                with engine.begin() as conn:  # read, then write, in one transaction
                    n = conn.execute(
                        text("SELECT count(*) FROM events WHERE writer = :w"), {"w": w}
                    ).scalar()
                    time.sleep(0.002)  # hold the write lock while others want it
                    conn.execute(text("INSERT INTO events VALUES (:w, :s)"), {"w": w, "s": n})
                    assert n == i
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)
        finally:
            engine.dispose()

    def reader() -> None:
        engine = create_db_engine(url)
        try:
            start.wait()
            while not done.is_set():
                with engine.connect() as conn:
                    n = conn.execute(text("SELECT count(*) FROM events")).scalar()
                seen.append(n)
                if 0 < n < WRITERS * ROWS:
                    midway.set()
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)
        finally:
            engine.dispose()

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    readers = [threading.Thread(target=reader) for _ in range(READERS)]
    for t in writers + readers:
        t.start()
    start.wait()
    for t in writers:
        t.join(timeout=120)
    done.set()
    for t in readers:
        t.join(timeout=30)

    assert not errors, errors
    with setup.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == WRITERS * ROWS
    assert midway.is_set() and max(seen) <= WRITERS * ROWS  # readers read while writers wrote
    setup.dispose()
