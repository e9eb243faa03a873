"""Dataset ingestion benchmark: BrightRun's streaming validate+normalise against a pandas
baseline, on the same generated chat JSONL file, in the same run.

    python bench/ingest.py [--mb 200] [--keep]

- data: a generated JSONL file of OpenAI-style chat rows (system prompt on some rows, 1-4
  turns, a few bad rows of each kind), about `--mb` MB, under bench/out/.
- brightrun: `core.datasets.ingest.process_file` (no tokenizer), writing the normalised train and
  eval files.
- baseline: `pandas.read_json(path, lines=True)`, then a row loop calling the same
  `normalise_row` checks and writing the same normalised JSONL with `json.dumps`.
Each run is its own subprocess, which reports its processing time (imports and start-up
excluded) and its peak RSS (`ru_maxrss`); runs alternate (`--repeat`, default 3) and the
fastest of each counts, so that load from other work on the machine hits both alike. Prints MB/s, peak RSS and the ratios; timing is
only meaningful against the baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project's packages before bench/ (bench/trainer.py is a script)
OUT = ROOT / "bench" / "out"

_WORDS = (
    "the model adapter learns from data and answers questions about orders refunds shipping "
    "accounts passwords invoices the customer asks politely and the assistant replies clearly "
    "with steps links and a short summary of what to do next"
).split()


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def generate(path: Path, target_mb: float, seed: int = 0) -> int:
    rng = random.Random(seed)
    target = int(target_mb * 1e6)
    rows = 0
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < target:
            rows += 1
            if rows % 997 == 0:  # a bad row of some kind now and then
                f.write(
                    rng.choice(
                        [
                            '{"messages": [{"role": "user", "content": "no answer"}]}\n',
                            '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}\n',
                            '{"messages": "not a list"}\n',
                        ]
                    )
                )
                continue
            msgs = []
            if rng.random() < 0.3:
                msgs.append({"role": "system", "content": _sentence(rng, 5, 20)})
            for _ in range(rng.randint(1, 4)):
                msgs.append({"role": "user", "content": _sentence(rng, 5, 40)})
                msgs.append(
                    {
                        "role": "assistant",
                        "content": " ".join(
                            _sentence(rng, 8, 30) for _ in range(rng.randint(1, 4))
                        ),
                    }
                )
            f.write(json.dumps({"messages": msgs}) + "\n")
    return rows


def run_brightrun(path: Path, out_dir: Path) -> dict:
    from core.datasets.ingest import process_file

    t0 = time.perf_counter()
    with open(out_dir / "br_train.jsonl", "wb") as tf, open(out_dir / "br_eval.jsonl", "wb") as ef:
        rep = process_file(path, train_out=tf, eval_out=ef)
    return {"seconds": time.perf_counter() - t0, "rows": rep.rows, "valid_rows": rep.valid_rows}


def run_baseline(path: Path, out_dir: Path) -> dict:
    import pandas as pd

    from core.datasets.layouts import normalise_row

    t0 = time.perf_counter()
    rows = valid = 0
    with open(out_dir / "pd_out.jsonl", "w", encoding="utf-8") as out:
        df = pd.read_json(path, lines=True)
        for i, rec in enumerate(df.to_dict(orient="records"), start=1):
            rows += 1
            rec = {k: v for k, v in rec.items() if not (isinstance(v, float) and v != v)}
            row, problems = normalise_row(rec, "messages", i)
            if row is not None:
                valid += 1
                out.write(json.dumps(row) + "\n")
    return {"seconds": time.perf_counter() - t0, "rows": rows, "valid_rows": valid}


def child(kind: str, path: Path, out_dir: Path) -> None:
    import resource

    res = (run_brightrun if kind == "brightrun" else run_baseline)(path, out_dir)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(res))


def measure(kind: str, path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--file", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=float, default=200.0, help="size of the generated file in MB")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of each, interleaved; the best counts"
    )
    ap.add_argument("--child", choices=["brightrun", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.file, a.file.parent)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "ingest_chat.jsonl"
    n = generate(path, a.mb)
    size_mb = path.stat().st_size / 1e6
    print(
        f"data: {path.name}, {size_mb:.1f} MB, {n} lines; load average before: {os.getloadavg()[0]:.2f}"
    )
    runs: dict[str, list[dict]] = {"brightrun": [], "baseline": []}
    for _ in range(a.repeat):  # interleaved, so both see the same load from other work
        for kind in runs:
            runs[kind].append(measure(kind, path))
    results = {}
    for kind, rs in runs.items():
        r = min(rs, key=lambda x: x["seconds"])
        r["mb_per_s"] = size_mb / r["seconds"]
        r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in rs)
        results[kind] = r
        times = ", ".join(f"{x['seconds']:.1f}" for x in rs)
        print(
            f"{kind:9s}: best {r['seconds']:6.1f} s ({times})  {r['mb_per_s']:6.1f} MB/s  "
            f"peak RSS {r['peak_rss_mb']:6.0f} MB  rows {r['rows']} valid {r['valid_rows']}"
        )
    b, p = results["brightrun"], results["baseline"]
    print(
        f"throughput ratio (brightrun / baseline): {b['mb_per_s'] / p['mb_per_s']:.2f}x; "
        f"peak RSS ratio: {b['peak_rss_mb'] / p['peak_rss_mb']:.2f}; "
        f"load average after: {os.getloadavg()[0]:.2f}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    if not a.keep:
        for f in OUT.glob("ingest_*"):
            f.unlink()
        for f in ("br_train.jsonl", "br_eval.jsonl", "pd_out.jsonl"):
            (OUT / f).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
