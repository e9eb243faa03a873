"""torchrun, recording which rank failed: `python -m trainer.torchrun RECORD -- ARGS...`.

Runs `torch.distributed.run` (the code behind the `torchrun` command) with `ARGS` as is.
When a worker process fails, torchrun stops the others and raises `ChildFailedError`,
whose `failures` say which global rank ended first, with its exit code (a negative code is
the signal that ended it) and when; this module writes them to the JSON file `RECORD`:

    {"failures": {"1": {"exitcode": -9, "signal": "SIGKILL", "ts": 1767225600.0}}}

and exits 1 (0, and no file, when every worker succeeded). `trainer.multi` reads it.

`die_with_parent()` asks Linux to SIGKILL the calling process when its parent ends: this
module calls it (it ends with the handler that started it, e.g. a cancelled job whose
worker was killed), and so does each rank (torchrun starts them in sessions of their own,
out of reach of a kill of the worker's process group), so nothing outlives the job.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent ends (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    record, rest = Path(args[0]), args[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    try:
        run(parse_args(rest))
    except ChildFailedError as e:
        failures = {
            str(rank): {
                "exitcode": f.exitcode,
                "signal": f.signal_name() if f.exitcode < 0 else None,
                "ts": f.timestamp,
            }
            for rank, f in e.failures.items()
        }
        record.write_text(json.dumps({"failures": failures}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
