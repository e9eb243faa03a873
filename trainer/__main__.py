"""`python -m trainer --spec job.json`: run one job locally, events as JSON lines on stdout.

Exit status 0 when the job completed, 1 when it failed. Reads the worker environment
(MODEL_CACHE_DIR, CHECKPOINT_DIR, ADAPTER_DIR, HF_TOKEN) like the RunPod worker does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m trainer", description="Run one BrightRun training job locally."
    )
    ap.add_argument(
        "--spec", required=True, help="job spec JSON file (trainer.shared.spec.JobSpec)"
    )
    a = ap.parse_args(argv)
    from trainer.handler import configure_logging, events

    configure_logging()
    try:
        payload = json.loads(Path(a.spec).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        print(f"cannot read job spec {a.spec}: {e}", file=sys.stderr)
        return 2

    final = None
    for event in events({"id": payload.get("job_id", "local"), "input": payload}):
        print(json.dumps(event), flush=True)
        final = event
    return 0 if final is not None and final["type"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
