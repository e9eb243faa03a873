"""Preference tuning speed: BrightRun's DPO against TRL's `DPOTrainer`, same pairs.

    python bench/dpo.py [--quick] [--pairs N] [--json FILE]

Two ways, each in its own process, one after the other in the same run, on the same
preference pairs, model and settings:

  (a) TRL `DPOTrainer` (trl 1.16) with its defaults for the batch shape: chosen and
      rejected of a micro-batch concatenated and padded to the longest sequence; the
      reference log-probs by a forward with the adapter disabled, per batch;
  (b) BrightRun (`trainer.actions.run_job`, method `dpo`): pairs packed into one
      padding-free row per micro-batch (chosen and rejected in one forward, no
      cross-sample attention), each pair's shared prompt computed once for both sides,
      the reference log-probs once per pair at setup.

Same for both: the model (a randomly initialised Qwen2-architecture model built on the
spot: hidden 512, 2 layers, the tiny chat tokenizer), float32 on the CPU (the trainer's
"auto" on a CPU without native bf16), LoRA r 16 / alpha 32 / dropout 0.05 on all linear
layers of the blocks, learning rate 5e-5 constant, beta 0.1 sigmoid loss, one epoch,
8 pairs per optimizer step (one micro-batch), gradient checkpointing on (both defaults),
no truncation (max length above the longest sequence). The pairs are length-skewed:
prompts of 4-120 words, answers of 2-160 words (seeded), like real preference data where
one answer is often much longer than the other.

Each way runs with one torch thread (the machine is shared: wall-clock rates move with
other work, CPU time much less). Measured: pairs per CPU-second and per second of wall
time, end to end (model load, tokenisation, the reference log-probs and training: TRL's
trainer built and trained; BrightRun's `run_job`, its adapter saved), and the slots each
way computes per real token of the two sides (padding adds, a shared prompt saves). Prints JSON with `ratio_cpu` = (b) / (a) pairs per
CPU-second (the headline on a busy machine), `ratio_wall`, and `ratio_train_cpu`: the
training alone (TRL: `trainer.train()`, its reference forwards included; BrightRun: the
reference pass and the loop), without model loading and tokenisation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 0
PAIRS_PER_STEP = 8
LR = 5e-5
BETA = 0.1
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.05}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = (
    "model adapter rank alpha token batch layer weight gradient loss epoch step data train "
    "eval prompt answer user memory speed cost budget cache checkpoint the a of to in and is "
    "for on with as by at from that this it be are was were will can apple river cloud stone"
).split()


def make_pairs(n: int) -> list[dict[str, Any]]:
    rng = random.Random(SEED)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + "."

    return [
        {
            "prompt": [{"role": "user", "content": text(4, 120)}],
            "chosen": [{"role": "assistant", "content": text(2, 160)}],
            "rejected": [{"role": "assistant", "content": text(2, 160)}],
        }
        for _ in range(n)
    ]


def run_trl(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in (work / "pairs.jsonl").read_text().splitlines()]
    args = DPOConfig(
        output_dir=str(work / "trl"),
        use_cpu=True,
        beta=BETA,
        per_device_train_batch_size=PAIRS_PER_STEP,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="constant",
        max_length=cfg["max_length"],
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        seed=SEED,
        disable_tqdm=True,
        gradient_checkpointing=True,
    )
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    cpu0, wall0 = time.process_time(), time.monotonic()
    trainer = DPOTrainer(
        model=str(work / "model"),
        args=args,
        train_dataset=Dataset.from_list(rows),
        peft_config=lora,
        processing_class=AutoTokenizer.from_pretrained(work / "model"),
    )
    train_cpu0 = time.process_time()
    trainer.train()
    train_cpu = time.process_time() - train_cpu0
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    slots = real = 0
    for batch in trainer.get_train_dataloader():
        slots += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
    return {
        "cpu_s": cpu,
        "train_cpu_s": train_cpu,
        "seconds": wall,
        "pairs": len(rows),
        "slots": slots,
        "tokens": real,
    }


def run_brightrun(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    # The libraries the trainer imports lazily, imported before the clock starts, as TRL's
    # are (imported with `trl` before its trainer is built).
    import peft  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers  # noqa: F401
    from peft import LoraConfig, get_peft_model  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler  # noqa: F401

    import trainer.kernels  # noqa: F401
    from trainer.actions import run_job
    from trainer.env import WorkerEnv

    spec = {
        "job_id": "bench-dpo",
        "model": {"name_or_path": str(work / "model")},
        "method": "dpo",
        "preference": {"beta": BETA},
        "data": {"train_path": str(work / "pairs.jsonl")},
        "quantization": "none",
        "lora": {**LORA, "target_modules": TARGETS},
        "training": {
            "epochs": 1.0,
            "learning_rate": LR,
            "lr_scheduler": "constant",
            "micro_batch_size": PAIRS_PER_STEP,
            "grad_accum": 1,
            "max_length": cfg["max_length"],
            "checkpoint_every": 0,
            "compute_dtype": "float32",
            "seed": SEED,
        },
        "output": {"adapter_name": "bench-dpo"},
    }
    env = WorkerEnv(
        model_cache_dir=work / "cache", checkpoint_dir=work / "ck", adapter_dir=work / "ad"
    )
    cpu0, wall0 = time.process_time(), time.monotonic()
    events, loop_cpu0 = [], 0.0
    for event in run_job(spec, env):
        events.append(event)
        if event.type == "started":
            loop_cpu0 = time.process_time()
    loop_cpu = time.process_time() - loop_cpu0
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    if events[-1].type != "completed":
        raise SystemExit(f"BrightRun job failed: {events[-1].data}")
    started = next(e for e in events if e.type == "started").data
    last = [e for e in events if e.type == "metrics"][-1].data
    ref_cpu = started["dataset"]["reference_pass_cpu_s"]
    return {
        "cpu_s": cpu,
        "train_cpu_s": loop_cpu + ref_cpu,  # the loop (adapter saved) and the reference pass
        "seconds": wall,
        "pairs": started["dataset"]["train"]["pairs"],
        "slots": last["tokens_seen_total"],  # computed: each pair's shared prefix once
        "tokens": started["dataset"]["train"]["tokens"],  # both sides' tokens, as TRL's
        "shared_prompt_tokens": started["dataset"].get("shared_prompt_tokens", 0),
        "reference_pass_s": started["dataset"]["reference_pass_s"],
        "optimizer_steps": last["step"],
    }


def prepare(work: Path, n_pairs: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from trainer.shared.tiny import build_tiny_chat_model
    from trainer.shared.tokens import answer_token_masks

    build_tiny_chat_model(work / "model", seed=SEED, hidden_size=512, num_layers=2)
    pairs = make_pairs(n_pairs)
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    tok = AutoTokenizer.from_pretrained(work / "model")
    prompts = [p["prompt"] for p in pairs]
    lengths = [
        len(ids)
        for key in ("chosen", "rejected")
        for ids, _ in answer_token_masks(tok, prompts, [p[key] for p in pairs])
    ]
    cfg = {"max_length": max(lengths) + 8, "pairs": n_pairs}
    (work / "cfg.json").write_text(json.dumps(cfg))
    return cfg


def child(way: str, work: Path) -> None:
    import torch

    torch.set_num_threads(1)
    cfg = json.loads((work / "cfg.json").read_text())
    result = (run_trl if way == "trl" else run_brightrun)(work, cfg)
    (work / f"{way}.json").write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 pairs: a few minutes on 2 cores")
    ap.add_argument("--pairs", type=int, default=0, help="pairs to train on (default 512)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.work))
        return
    n = args.pairs or (64 if args.quick else 512)
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        work = Path(tmp)
        cfg = prepare(work, n)
        results = {}
        for way in ("trl", "brightrun"):
            t0 = time.monotonic()
            cmd = [sys.executable, __file__, "--child", way, "--work", str(work)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)
            results[way] = json.loads((work / f"{way}.json").read_text())
            results[way]["wall_s"] = round(time.monotonic() - t0, 2)
            r = results[way]
            r["pairs_per_s"] = round(r["pairs"] / r["seconds"], 3)
            r["pairs_per_cpu_s"] = round(r["pairs"] / r["cpu_s"], 3)
            r["train_pairs_per_cpu_s"] = round(r["pairs"] / r["train_cpu_s"], 3)
    trl, ours = results["trl"], results["brightrun"]
    out = {
        "pairs": n,
        "max_length": cfg["max_length"],
        "trl": trl,
        "brightrun": ours,
        "trl_padding_slots_per_token": round(trl["slots"] / trl["tokens"], 3),
        "brightrun_slots_per_token": round(ours["slots"] / ours["tokens"], 3),
        "ratio_cpu": round(ours["pairs_per_cpu_s"] / trl["pairs_per_cpu_s"], 3),
        "ratio_wall": round(ours["pairs_per_s"] / trl["pairs_per_s"], 3),
        "ratio_train_cpu": round(ours["train_pairs_per_cpu_s"] / trl["train_pairs_per_cpu_s"], 3),
        "load_average": os.getloadavg(),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
