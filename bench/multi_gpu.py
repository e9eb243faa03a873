"""Multi-GPU training: memory per GPU and tokens/s of one job on N GPUs against the same
job on one, side by side in the same run (torchrun + FSDP2, `trainer.multi`).

    python bench/multi_gpu.py [--gpus N] [--sharding fsdp|ddp] [--quantization nf4] [--json FILE]
    python bench/multi_gpu.py --cpu-smoke      # the same code path, small, 2 CPU processes

Needs a machine with at least N CUDA GPUs (default: all visible; at least 2); on fewer it
prints why and exits 0 with `{"skipped": ...}`, so bench/gpu.sh runs it anywhere. Nothing is
downloaded: the model is a random Qwen2-architecture one built on the spot (hidden 2048,
16 layers, bfloat16, untied head, ~0.9B parameters), trained with LoRA r 16 on all linear
layers over the same rows, the same global batch (micro-batch 4 x grad_accum 8 rows of 1024
tokens), 12 optimizer steps, every layer recomputed, one run per configuration;
`--quantization nf4`: QLoRA, the 4-bit base sharded (`fsdp`) or replicated (`ddp`).

Measured, per run: real (loss-bearing) tokens per second over the steps after the first
(from the `metrics` events; the first step carries CUDA warm-up), rank 0's peak CUDA memory
(`peak_memory_bytes`, cuda_max_allocated), the frozen base's bytes rank 0 holds (the
`started` event's `base_bytes_per_gpu`), the final loss (N GPUs train what one does: the
two should agree to float noise), and the planner's per-GPU estimate for the same
spec (`core.planner.per_gpu_memory`, from the model's config). JSON: each run, and
`speedup` (N-GPU tokens/s over one GPU's) and `memory_ratio` (N-GPU peak over one GPU's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = 512
STEPS = 12


def rows() -> list[dict[str, Any]]:
    out = []
    for i in range(ROWS):
        q = f"Question {i}: " + " ".join(f"word{(i * 7 + k) % 97}" for k in range(60))
        a = " ".join(f"answer{(i * 13 + k) % 89}" for k in range(180))
        out.append(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
    return out


def spec(
    model: Path, data: Path, gpus: int, sharding: str, small: bool, quantization: str = "none"
) -> dict[str, Any]:
    extra = {"gpus": gpus, "sharding": sharding} if gpus > 1 else {}
    return {
        "job_id": f"bench-gpus-{gpus}",
        "model": {"name_or_path": str(model)},
        "data": {"train_path": str(data)},
        "quantization": quantization,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {
            "max_steps": 3 if small else STEPS,
            "micro_batch_size": 4,
            "grad_accum": 2 if small else 8,
            "max_length": 256 if small else 1024,
            "checkpoint_every": 0,
            "checkpoint_layers": "all",
            "warmup_ratio": 0.0,
        },
        "output": {"adapter_name": f"bench-{gpus}"},
        **({"device": "cpu"} if small else {}),
        **extra,
    }


def run(job: dict[str, Any], work: Path) -> dict[str, Any]:
    from trainer.env import WorkerEnv
    from trainer.handler import events

    env = WorkerEnv(
        model_cache_dir=work / "models",
        checkpoint_dir=work / "checkpoints",
        adapter_dir=None,
        cached_models_dir=work / "hub",
    )
    evs = list(events({"id": job["job_id"], "input": job}, env))
    final = evs[-1]
    if final["type"] != "completed":
        return {"failed": final["data"]}
    metrics = [e["data"] for e in evs if e["type"] == "metrics"]
    started = next(e["data"]["model"] for e in evs if e["type"] == "started")
    later = metrics[1:]
    seconds = later[-1]["elapsed_s"] - metrics[0]["elapsed_s"]
    tokens = later[-1]["tokens_seen"] - metrics[0]["tokens_seen"]
    return {
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_memory_gib_rank0": round(max(m["peak_memory_bytes"] for m in metrics) / 2**30, 2),
        "final_loss": metrics[-1]["loss"],
        "base_gib_per_gpu": round(started.get("base_bytes_per_gpu", 0) / 2**30, 3) or None,
    }


def planned_gib(model: Path, job: dict[str, Any]) -> float:
    from core import planner
    from trainer.shared.spec import JobSpec

    facts = planner.describe(str(model))
    s = JobSpec.model_validate(job)
    return round(planner.per_gpu_memory(s, facts, s.gpus).total_bytes / 2**30, 2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=0, help="GPUs for the multi-GPU run (0: all)")
    ap.add_argument("--sharding", default="fsdp", choices=["fsdp", "ddp"])
    ap.add_argument("--quantization", default="none", choices=["none", "nf4"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cpu-smoke", action="store_true", help="small, 2 CPU processes (gloo)")
    a = ap.parse_args()
    import torch

    have = 2 if a.cpu_smoke else torch.cuda.device_count()
    n = a.gpus or have
    if have < 2 or n < 2 or n > have:
        out: dict[str, Any] = {"skipped": f"needs at least 2 CUDA GPUs (this machine has {have})"}
    else:
        from trainer.shared.tiny import build_tiny_chat_model

        work = Path(tempfile.mkdtemp(prefix="bench-gpus-"))
        size = {"hidden_size": 64, "num_layers": 2} if a.cpu_smoke else {"hidden_size": 2048}
        model = build_tiny_chat_model(
            work / "model",
            **{"num_layers": 16, "vocab_size": 32000, "num_heads": 16, "num_kv_heads": 4, **size},
            tie_word_embeddings=False,
            dtype="float32" if a.cpu_smoke else "bfloat16",
        )
        data = work / "rows.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
        name = "cpu" if a.cpu_smoke else torch.cuda.get_device_name(0)
        out = {"gpu": name, "gpus": n, "sharding": a.sharding, "quantization": a.quantization}
        for count in (1, n):
            job = spec(model, data, count, a.sharding, a.cpu_smoke, a.quantization)
            out[f"gpus_{count}"] = {
                **run(job, work),
                "planned_gib_per_gpu": planned_gib(model, job),
            }
        one, many = out["gpus_1"], out[f"gpus_{n}"]
        if "tokens_per_s" in one and "tokens_per_s" in many:
            out["speedup"] = round(many["tokens_per_s"] / one["tokens_per_s"], 3)
            out["memory_ratio"] = round(
                many["peak_memory_gib_rank0"] / one["peak_memory_gib_rank0"], 3
            )
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
