"""The real trainer handler on a volume that fills up: the first attempt of each job finds
no space left when it writes its second checkpoint (`Checkpoints.save` raises ENOSPC, as
the filesystem would; a quota-limited folder or a tiny tmpfs needs root, so the write is
patched). A later attempt (`first_seq` above 0) finds the space freed."""

from __future__ import annotations

import errno
from typing import Any

from trainer import checkpoint
from trainer.handler import handler as real_handler

_real_save = checkpoint.Checkpoints.save


def handler(job: dict[str, Any]):
    first_attempt = not (job.get("input") or {}).get("first_seq")
    saves = {"n": 0}

    def save(self, run, progress):
        saves["n"] += 1
        if first_attempt and saves["n"] >= 2:
            target = self.root / f"step-{progress.step:07d}.tmp" / "optimizer.pt"
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return _real_save(self, run, progress)

    checkpoint.Checkpoints.save = save
    try:
        yield from real_handler(job)
    finally:
        checkpoint.Checkpoints.save = _real_save
