"""Trainer efficiency: BrightRun's default path against TRL's SFTTrainer, same rows.

    python bench/trainer.py [--quick] [--json FILE] [--rows N] [--threads T] [--dtype D]
    python bench/trainer.py --gpu-real-size [--json FILE]      # on a CUDA machine

Four ways, each in its own process (so peak RSS is its own), on the same training rows
(the length-skewed chat set `../shared/bench/skewed_chat.py` writes, default arguments;
`--quick` takes its first 200 rows) and the same held-out evaluation rows:

  (a) TRL `SFTTrainer` defaults: no packing, padding to the longest row of each batch,
      micro-batch 8, every layer recomputed in the backward (TRL's configs default
      `gradient_checkpointing` to on);
  (b) TRL packing: `packing=True` with best-fit-decreasing (`bfd`, which makes the rows
      padding-free), gradient checkpointing left on;
  (d) TRL's best configuration on a machine with memory to spare: (b) with gradient
      checkpointing off;
  (c) BrightRun's default settings (`trainer.actions.run_job`): packed, padding-free, and
      only the layers whose activations do not fit recomputed (`checkpoint_layers:
      as_needed`; on this model, none).

Same for all four: the model (a random Qwen2-architecture config, wide and shallow:
hidden 1024, 2 layers, stored in bfloat16 like published checkpoints), the compute dtype
(chosen once per run by the trainer's own rule, `trainer.model.pick_compute_dtype` with
"auto": bfloat16 on a CPU with native bf16 (AMX or AVX512-BF16), float32 elsewhere, where a
bf16 matmul is tens of times slower; all three ways load and train in it), LoRA (r 16, alpha
32, dropout 0.05, all linear layers of the blocks), learning rate 2e-4 with cosine decay
and the same warmup, one epoch, loss on assistant tokens only (TRL:
`assistant_only_loss=True`), no truncation (every max length >= the longest row), and on
average the same real tokens per optimizer step: (a) takes 8 rows per step, (b), (c) and
(d) pack rows of
L = max(longest row, 8 x mean row length) tokens, one per step. Departures from the
libraries' defaults are only these: learning rate, warmup, epochs, max length, batch
shape, assistant-only loss, no checkpoints saved, CPU, and (d)'s checkpointing.

Measured: real (loss-bearing) tokens per second of training (TRL: `train_runtime`;
BrightRun: from its `started` to its last `metrics` event), padding slots per real token,
optimizer steps, peak RSS, final train loss (mean of the last 10 optimizer steps) and eval
loss (one evaluator for all three: the saved adapter on the base model, token-mean
cross-entropy on the assistant tokens of the held-out rows). Prints the compute dtype
and why (stderr), then JSON with `ratio_vs_trl_best` = (c)/(d), the headline,
`ratio_vs_trl_defaults` = (c)/(a) and `ratio_vs_trl_packing` = (c)/(b) real tokens per
second (and per CPU-second, `_cpu_time`), all measured in the same run.

`--gpu-real-size`: QLoRA (NF4) on a randomly initialised Qwen2.5-7B-shaped model (written
to a local folder first, then loaded through the trainer's real path), reporting tokens/s,
peak CUDA memory and model FLOPs utilisation 6 x parameters x tokens / time / 989 TFLOP/s
(H100 dense bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SKEWED = ROOT.parent / "shared" / "bench" / "skewed_chat.py"

LR = 2e-4
WARMUP_RATIO = 0.03
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ROWS_PER_STEP = 8  # TRL's default micro-batch
SEED = 42
H100_BF16_FLOPS = 989e12


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- evaluation
def compute_dtype_name() -> str:
    """The dtype the trainer picks on this CPU when left to "auto" (one rule for all ways)."""
    from types import SimpleNamespace

    import torch

    from trainer.model import pick_compute_dtype

    auto = SimpleNamespace(training=SimpleNamespace(compute_dtype="auto"))
    return str(pick_compute_dtype(auto, torch.device("cpu"))).removeprefix("torch.")


def describe_compute_dtype(choice: str = "auto") -> tuple[str, str]:
    """The run's one compute dtype and why: `choice`, or the trainer's rule for this CPU."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    native = sorted(flags & {"amx_bf16", "amx_tile", "avx512_bf16"})
    cpu = f"CPU bf16 flags: {', '.join(native) or 'none'}"
    if choice != "auto":
        return choice, f"set with --dtype; {cpu}"
    dtype = compute_dtype_name()
    rule = "native bf16" if dtype == "bfloat16" else "no native bf16: float32"
    return dtype, f"the trainer's rule, {rule}; {cpu}"


def eval_loss(model_dir: Path, adapter_dir: Path, rows: list[dict[str, Any]], dtype: str) -> float:
    """Token-mean cross-entropy on assistant tokens (the template's generation mask)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for row in rows:
            enc = tok.apply_chat_template(
                row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            ids = torch.tensor([enc["input_ids"]])
            mask = torch.tensor(enc["assistant_masks"][1:], dtype=torch.bool)
            logits = model(input_ids=ids).logits[0, :-1].float()
            lp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None]).squeeze(1)
            total -= float(lp[mask].sum())
            n += int(mask.sum())
    return total / max(n, 1)


# ---------------------------------------------------------------------------- the ways
def run_trl(way: str, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    packing = way in "bd"
    rows = _read_rows(work / "train.jsonl")
    tok = AutoTokenizer.from_pretrained(work / "model")
    args = SFTConfig(
        output_dir=str(work / f"trl-{way}"),
        use_cpu=True,
        model_init_kwargs={"dtype": cfg["dtype"]},  # the run's one compute dtype
        bf16=cfg["dtype"] == "bfloat16",
        per_device_train_batch_size=1 if packing else ROWS_PER_STEP,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=cfg["warmup_steps_a" if way == "a" else "warmup_steps_packed"],
        max_length=cfg["row_length"],
        packing=packing,
        packing_strategy="bfd",
        gradient_checkpointing=way != "d",  # TRL's default (on) but in its best configuration
        assistant_only_loss=True,
        save_strategy="no",
        logging_steps=1,  # so the final loss covers the same last 10 steps as (c)
        report_to=[],
        seed=SEED,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=str(work / "model"),
        args=args,
        train_dataset=Dataset.from_list(rows),
        peft_config=lora,
        processing_class=tok,
    )
    slots = real = loss_tokens = 0
    for batch in trainer.get_train_dataloader():
        slots += batch["input_ids"].numel()
        real += (
            int(batch["attention_mask"].sum())
            if "attention_mask" in batch
            else batch["input_ids"].numel()
        )
        loss_tokens += int((batch["labels"][..., 1:] != -100).sum())
    cpu0 = time.process_time()
    out = trainer.train()
    cpu_seconds = time.process_time() - cpu0
    rss = _peak_rss()
    seconds = out.metrics["train_runtime"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    adapter = work / f"adapter-{way}"
    trainer.model.save_pretrained(adapter)
    return {
        "optimizer_steps": trainer.state.global_step,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "loss_tokens": loss_tokens,
        "tokens": real,
        "slots": slots,
        "peak_rss_bytes": rss,
        "final_train_loss": sum(losses[-10:]) / len(losses[-10:]),
        "model_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "recomputed_layers": "all" if args.gradient_checkpointing else "none",
        "adapter": str(adapter),
        "threads": torch.get_num_threads(),
    }


def run_brightrun(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    import torch

    from trainer.actions import run_job
    from trainer.env import WorkerEnv
    from trainer.shared.spec import JobSpec

    adapter = work / "adapter-c"
    spec = JobSpec.model_validate(
        {
            "job_id": "bench-c",
            "model": {"name_or_path": str(work / "model")},
            "data": {"train_path": str(work / "train.jsonl")},
            "quantization": "none",  # the same unquantised base for all three ways
            "lora": {**LORA, "target_modules": TARGETS},
            "training": {
                "epochs": 1,
                "learning_rate": LR,
                "warmup_ratio": WARMUP_RATIO,
                "micro_batch_size": 1,
                "grad_accum": 1,
                "max_length": cfg["row_length"],
                "checkpoint_every": 0,
                "seed": SEED,
                "compute_dtype": cfg["dtype"],
                **cfg.get("brightrun_overrides", {}),
            },
            "output": {"adapter_name": "bench-c", "local_dir": str(adapter)},
        }
    )
    env = WorkerEnv(work / "cache", work / "checkpoints", None)
    t_started = t_last = cpu_started = cpu_last = 0.0
    events = []
    for ev in run_job(spec, env):
        events.append(ev)
        if ev.type == "started":
            t_started, cpu_started = time.monotonic(), time.process_time()
        elif ev.type == "metrics":
            t_last, cpu_last = time.monotonic(), time.process_time()
    rss = _peak_rss()
    if events[-1].type != "completed":
        raise RuntimeError(f"BrightRun run failed: {events[-1].data}")
    metrics = [e.data for e in events if e.type == "metrics"]
    started = events[0].data
    return {
        "optimizer_steps": metrics[-1]["step"],
        "train_seconds": t_last - t_started,
        "train_cpu_seconds": cpu_last - cpu_started,
        "loss_tokens": metrics[-1]["tokens_seen"],
        "tokens": metrics[-1]["tokens_seen_total"],
        "slots": metrics[-1]["tokens_seen_total"],  # padding-free rows
        "peak_rss_bytes": rss,
        "final_train_loss": sum(m["loss"] for m in metrics[-10:]) / len(metrics[-10:]),
        "model_dtype": started["model"]["compute_dtype"],
        "attention": started["model"]["attention"],
        "packing": started["model"]["packing"],
        "recomputed_layers": started["model"]
        .get("activation_checkpointing", {})
        .get("layers_recomputed", "all"),
        "activation_checkpointing": started["model"].get("activation_checkpointing"),
        "adapter": str(adapter),
        "threads": torch.get_num_threads(),
    }


def child(way: str, work: Path) -> None:
    import torch

    cfg = json.loads((work / "config.json").read_text())
    torch.set_num_threads(cfg["threads"])
    random.seed(SEED)
    torch.manual_seed(SEED)
    res = run_brightrun(cfg, work) if way == "c" else run_trl(way, cfg, work)
    res["eval_loss"] = eval_loss(
        work / "model", Path(res["adapter"]), _read_rows(work / "eval.jsonl"), cfg["dtype"]
    )
    (work / f"result-{way}.json").write_text(json.dumps(res))


# ------------------------------------------------------------------------------ driver
def prepare(work: Path, rows: int | None, threads: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from trainer.shared.tiny import build_tiny_chat_model

    subprocess.run([sys.executable, str(SKEWED), str(work / "all.jsonl")], check=True)
    data = _read_rows(work / "all.jsonl")
    if rows:
        data = data[:rows]
    order = list(range(len(data)))
    random.Random(SEED).shuffle(order)
    n_eval = max(8, len(data) // 20)
    _write_rows(work / "eval.jsonl", [data[i] for i in sorted(order[:n_eval])])
    train = [data[i] for i in sorted(order[n_eval:])]
    _write_rows(work / "train.jsonl", train)
    build_tiny_chat_model(
        work / "model",
        seed=0,
        hidden_size=1024,
        num_layers=2,
        intermediate_size=2816,
        num_heads=16,
        num_kv_heads=4,
        dtype="bfloat16",
        initializer_range=0.02,
    )
    tok = AutoTokenizer.from_pretrained(work / "model")
    lengths = [
        len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
        for r in train
    ]
    mean = sum(lengths) / len(lengths)
    row_length = max(max(lengths), round(ROWS_PER_STEP * mean))
    steps_a = math.ceil(len(train) / ROWS_PER_STEP)
    # (b)/(c)/(d) have about sum(lengths)/row_length steps; the same warmup share for all.
    steps_packed = math.ceil(sum(lengths) / row_length)
    cfg = {
        "rows_train": len(train),
        "rows_eval": n_eval,
        "tokens_train": sum(lengths),
        "mean_row_tokens": round(mean, 1),
        "max_row_tokens": max(lengths),
        "row_length": row_length,
        "warmup_steps_a": math.ceil(WARMUP_RATIO * steps_a),
        "warmup_steps_packed": math.ceil(WARMUP_RATIO * steps_packed),
        "threads": threads,
        "dtype": compute_dtype_name(),
    }
    (work / "config.json").write_text(json.dumps(cfg))
    return cfg


def summarise(cfg: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"setup": cfg, "ways": {}}
    names = {
        "a": "trl_defaults",
        "b": "trl_packing_bfd",
        "c": "brightrun_defaults",
        "d": "trl_best_packing_bfd_no_recompute",
    }
    for way, r in results.items():
        out["ways"][names[way]] = {
            "real_tokens_per_s": round(r["loss_tokens"] / r["train_seconds"], 2),
            "real_tokens_per_cpu_s": round(r["loss_tokens"] / r["train_cpu_seconds"], 2),
            "all_tokens_per_s": round(r["tokens"] / r["train_seconds"], 2),
            "padding_slots_per_real_token": round((r["slots"] - r["tokens"]) / r["loss_tokens"], 4),
            "padding_fraction": round((r["slots"] - r["tokens"]) / r["slots"], 4),
            "optimizer_steps": r["optimizer_steps"],
            "real_tokens_per_step": round(r["loss_tokens"] / r["optimizer_steps"], 1),
            "peak_rss_mb": round(r["peak_rss_bytes"] / 2**20, 1),
            "train_seconds": round(r["train_seconds"], 2),
            "train_cpu_seconds": round(r["train_cpu_seconds"], 2),
            "final_train_loss": round(r["final_train_loss"], 4),
            "eval_loss": round(r["eval_loss"], 4),
            **{
                k: r[k]
                for k in (
                    "model_dtype",
                    "recomputed_layers",
                    "attention",
                    "packing",
                    "activation_checkpointing",
                )
                if k in r
            },
        }
    # Ratios of wall-clock rates (the headline), and of CPU-time rates: on a machine shared
    # with other work the latter is steadier, since each run is one thread.
    for key, suffix in (("real_tokens_per_s", ""), ("real_tokens_per_cpu_s", "_cpu_time")):
        tps = {w: out["ways"][names[w]][key] for w in results}
        for label, way in (("best", "d"), ("defaults", "a"), ("packing", "b")):
            if "c" in tps and way in tps:
                out[f"ratio_vs_trl_{label}{suffix}"] = round(tps["c"] / tps[way], 3)
    return out


def gpu_real_size(args: argparse.Namespace) -> dict[str, Any]:
    """QLoRA on Qwen2.5-7B shapes with random weights, through the trainer's real path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trainer.actions import run_job
    from trainer.env import WorkerEnv
    from trainer.shared.spec import JobSpec
    from trainer.shared.tiny import build_tiny_chat_model

    work = Path(args.workdir or tempfile.mkdtemp(prefix="brightrun-gpu-bench-"))
    shape = (
        dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
        )
        if not args.shape_small
        else dict(
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=4096,
        )
    )
    model_dir = work / "model"
    if not (model_dir / "config.json").is_file():
        tiny = build_tiny_chat_model(work / "tok", hidden_size=64)  # tokenizer + template
        cfg = Qwen2Config(
            **shape,
            max_position_embeddings=32768,
            tie_word_embeddings=False,
            eos_token_id=2,
            pad_token_id=0,
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
        model.save_pretrained(model_dir)
        del model
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            (model_dir / f).write_bytes((tiny / f).read_bytes())
    n_params = _qwen2_params(shape)
    subprocess.run(
        [sys.executable, str(SKEWED), str(work / "train.jsonl"), "--rows", str(args.rows or 600)],
        check=True,
    )
    results = {}
    variants = (("brightrun_defaults", {}), ("recompute_all_layers", {"checkpoint_layers": "all"}))
    for label, overrides in variants:
        spec = JobSpec.model_validate(
            {
                "job_id": f"gpu-{label}",
                "model": {"name_or_path": str(model_dir)},
                "data": {"train_path": str(work / "train.jsonl")},
                "quantization": "nf4",
                "training": {
                    "max_steps": args.gpu_steps,
                    "micro_batch_size": 4,
                    "grad_accum": 1,
                    "max_length": 2048,
                    "checkpoint_every": 0,
                    **overrides,
                },
                "output": {
                    "adapter_name": f"gpu-{label}",
                    "local_dir": str(work / f"adapter-{label}"),
                },
            }
        )
        events = list(run_job(spec, WorkerEnv(work / "cache", work / "ck", None)))
        if events[-1].type != "completed":
            results[label] = {"failed": events[-1].data}
            continue
        m = [e.data for e in events if e.type == "metrics"]
        # Skip the first step (CUDA warm-up) in the rate.
        secs = m[-1]["elapsed_s"] - m[0]["elapsed_s"]
        toks = m[-1]["tokens_seen_total"] - m[0]["tokens_seen_total"]
        loss_toks = m[-1]["tokens_seen"] - m[0]["tokens_seen"]
        results[label] = {
            "tokens_per_s": round(toks / secs, 1),
            "real_tokens_per_s": round(loss_toks / secs, 1),
            "peak_memory_gib": round(m[-1]["peak_memory_bytes"] / 2**30, 2),
            "mfu": round(6 * n_params * toks / secs / H100_BF16_FLOPS, 4),
            "steps": m[-1]["step"],
            "device": events[0].data["model"]["device_name"],
            "attention": events[0].data["model"]["attention"],
            "activation_checkpointing": events[0].data["model"].get("activation_checkpointing"),
        }
    return {"gpu_real_size": {"shape": shape, "parameters": n_params, "results": results}}


def _qwen2_params(s: dict[str, int]) -> int:
    h, i, n, v = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
    kv = h // s["num_attention_heads"] * s["num_key_value_heads"]
    per_layer = h * h * 2 + 2 * h * kv + (h + 2 * kv) + 3 * h * i + 2 * h
    return n * per_layer + 2 * v * h + h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 rows: a few minutes on 2 cores")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--rows", type=int, help="use the first N rows of the data set")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--ways", default="abdc", help="which of a, b, c, d to run (default all)")
    ap.add_argument("--workdir", help="keep intermediate files here (default: a temp folder)")
    ap.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="compute dtype of every way (default: the trainer's rule for this CPU)",
    )
    ap.add_argument("--gpu-real-size", action="store_true", help="QLoRA on 7B shapes (CUDA)")
    ap.add_argument("--gpu-steps", type=int, default=8)
    ap.add_argument("--shape-small", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--brightrun-overrides",
        default="{}",
        help="JSON of training settings changed for (c) only, for ablations, e.g. "
        '\'{"checkpoint_layers": "all"}\'',
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        child(args.child, Path(args.workdir))
        return
    if args.gpu_real_size:
        out = gpu_real_size(args)
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="brightrun-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        rows = args.rows or (200 if args.quick else None)
        cfg = prepare(work, rows, args.threads)
        cfg["brightrun_overrides"] = json.loads(args.brightrun_overrides)
        cfg["dtype"], cfg["dtype_reason"] = describe_compute_dtype(args.dtype)
        print(f"compute dtype: {cfg['dtype']} ({cfg['dtype_reason']})", file=sys.stderr)
        (work / "config.json").write_text(json.dumps(cfg))
        cfg["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        results = {}
        for way in args.ways:
            t = time.monotonic()
            subprocess.run(
                [sys.executable, __file__, "--child", way, "--workdir", str(work)],
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
            )
            results[way] = json.loads((work / f"result-{way}.json").read_text())
            results[way]["wall_seconds"] = time.monotonic() - t
        cfg["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        out = summarise(cfg, results)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
