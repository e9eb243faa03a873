"""The fault suite's stack: the real local endpoint (a process running the real trainer
handler on the tiny model, CPU), worker processes, syncer processes (`python -m
core.syncer`), SQLite or a throwaway PostgreSQL database, the local store. One endpoint per
module; each test injects one fault and checks what a user would see: the stored history
whole (no event lost or stored twice), a truthful status with a reason, the cost recorded
once, and a retry that resumes from the checkpoint where there is one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.jobs.stack import TRAINING, Stack, assert_whole_history, kill, make_stack

LONG = {**TRAINING, "max_steps": 100_000}

__all__ = ["LONG", "Stack", "assert_whole_history", "kill", "make_stack"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(tmp_path_factory.mktemp("faults"))
