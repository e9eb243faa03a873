"""Preference tuning speed: BrightRun's DPO against TRL's `DPOTrainer`, same pairs.

    python bench/dpo.py [--quick] [--pairs N] [--json FILE] [--dtype D] [--ways abcd]

Four ways, each in its own process, one after the other in the same run, on the same
preference pairs, model and settings:

  (a) TRL `DPOTrainer` (trl 1.16) defaults: chosen and rejected of a batch concatenated and
      padded to the longest sequence, the reference log-probs by a forward with the adapter
      disabled per batch, every layer recomputed in the backward (`gradient_checkpointing`
      defaults to on in TRL's configs);
  (b) TRL's best configuration on this machine (`TRL_BEST`): the same, with gradient
      checkpointing off (the memory allows it here) and `train_sampling_strategy=
      "group_by_length"` (batches of similar lengths: TRL's way to cut padding, since
      `DPOConfig(padding_free=True)` falls back to padding in trl 1.16);
  (c) BrightRun (`trainer.actions.run_job`, method `dpo`) with its defaults: pairs packed
      into padding-free rows (no cross-sample attention), each pair's shared prompt
      computed once for both sides, the reference log-probs once per pair at setup, and
      only the layers whose activations do not fit recomputed (`checkpoint_layers:
      as_needed`; here none);
  (d) BrightRun recomputing every layer (`checkpoint_layers: all`), the policy of (a).

Same for all: the model (a randomly initialised Qwen2-architecture model built on the
spot: hidden 512, 2 layers, the tiny chat tokenizer), the compute dtype (one per run,
by the trainer's rule `trainer.model.pick_compute_dtype` "auto": bfloat16 where the CPU has
native bf16, AMX or AVX512-BF16, float32 elsewhere, where a bf16 matmul is tens of times
slower; TRL through `model_init_kwargs={"dtype": ...}` and `bf16=`, since `DPOConfig`
otherwise turns bf16 autocast on whatever the CPU), LoRA r 16 / alpha 32 on all linear
layers of the blocks with dropout 0 (TRL's `disable_dropout` default turns LoRA dropout
off; BrightRun is given 0 so both do the same work), learning rate 5e-5 constant, beta 0.1
sigmoid loss, one epoch, no truncation, and the same optimizer steps over the same pairs:
TRL takes 8 pairs per step; BrightRun packs pairs into one row per step, with the row
length chosen (`prepare`) so that the pairs fill exactly as many rows as TRL takes steps
(8 pairs per step on average; the bench prints the fewest and most). The pairs are
length-skewed: prompts of 4-120 words, answers of 2-160 words (seeded).

Each way runs with one torch thread (the machine is shared: wall-clock rates move with
other work, CPU time much less). Measured: pairs per CPU-second and per wall second, end to
end (model load, tokenisation, the reference log-probs, training, the adapter saved), and
of the training alone (`ratio_train_cpu`: TRL's `train()` plus any reference precompute;
BrightRun's reference pass and loop); token slots computed per real token of the two sides
(padding adds, a shared prompt saves); the loss each trainer logged (mean over its steps,
and its last step); and, from one evaluator for all ways, the DPO loss and reward accuracy
of the saved adapter on the training pairs (float32, reference = the adapter disabled), so
"equal loss" can be checked. Ratios are BrightRun's rate over a TRL way's, measured in the
same run: `vs_trl_best` = (c)/(b) is the headline; `vs_trl_defaults` = (c)/(a) and
`same_recompute_vs_trl_defaults` = (d)/(a).
"""

from __future__ import annotations

import argparse
import json
import math
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

from bench.trainer import describe_compute_dtype  # noqa: E402

SEED = 0
PAIRS_PER_STEP = 8
LR = 5e-5
BETA = 0.1
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# TRL's fastest DPO settings on a CPU with memory to spare (trl 1.16; see the docstring).
# `group_by_length` reads each pair's length from a "length" column (`run_trl` adds it), which
# the trainer keeps only with `remove_unused_columns=False`.
TRL_BEST = {
    "gradient_checkpointing": False,
    "train_sampling_strategy": "group_by_length",
    "remove_unused_columns": False,
}
NAMES = {
    "a": "trl_defaults",
    "b": "trl_best",
    "c": "brightrun_defaults",
    "d": "brightrun_recompute_all",
}
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


def _read_pairs(work: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (work / "pairs.jsonl").read_text().splitlines()]


def run_trl(way: str, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = _read_pairs(work)
    options = {**(TRL_BEST if way == "b" else {}), **cfg.get("trl_options", {}).get(way, {})}
    args = DPOConfig(
        output_dir=str(work / f"trl-{way}"),
        use_cpu=True,
        model_init_kwargs={"dtype": cfg["dtype"]},  # the run's one compute dtype
        bf16=cfg["dtype"] == "bfloat16",
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
        **options,
    )
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    # A reference precompute (`precompute_ref_log_probs`) runs while the trainer is built:
    # its CPU time belongs to the training's.
    ref_cpu = [0.0]
    precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self: Any, *a: Any, **k: Any) -> Any:
        c0 = time.process_time()
        try:
            return precompute(self, *a, **k)
        finally:
            ref_cpu[0] += time.process_time() - c0

    DPOTrainer._precompute_ref_logps = timed_precompute  # type: ignore[method-assign]
    adapter = work / f"adapter-{way}"
    cpu0, wall0 = time.process_time(), time.monotonic()
    tok = AutoTokenizer.from_pretrained(work / "model")
    dataset = Dataset.from_list(rows)
    if args.train_sampling_strategy == "group_by_length":
        # The longer side of each pair in tokens: the width it asks of its batch.
        dataset = dataset.add_column(
            "length",
            [
                max(
                    len(tok.apply_chat_template(r["prompt"] + r[k])) for k in ("chosen", "rejected")
                )
                for r in rows
            ],
        )
    trainer = DPOTrainer(
        model=str(work / "model"),
        args=args,
        train_dataset=dataset,
        peft_config=lora,
        processing_class=tok,
    )
    train_cpu0 = time.process_time()
    trainer.train()
    train_cpu = time.process_time() - train_cpu0 + ref_cpu[0]
    trainer.model.save_pretrained(adapter)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    slots = real = 0
    for batch in trainer.get_train_dataloader():
        slots += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model = trainer.model
    return {
        "cpu_s": cpu,
        "train_cpu_s": train_cpu,
        "seconds": wall,
        "pairs": len(rows),
        "slots": slots,
        "tokens": real,
        "optimizer_steps": trainer.state.global_step,
        "pairs_per_step": [PAIRS_PER_STEP],
        "logged_losses": losses,
        "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "recomputed_layers": "all" if args.gradient_checkpointing else "none",
        "trl_options": options,
        "adapter": str(adapter),
        "threads": torch.get_num_threads(),
    }


def run_brightrun(way: str, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    # The libraries the trainer imports lazily, imported before the clock starts, as TRL's
    # are (imported with `trl` before its trainer is built).
    import peft  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch
    import transformers  # noqa: F401
    from peft import LoraConfig, get_peft_model  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler  # noqa: F401

    import trainer.kernels  # noqa: F401
    from trainer.actions import run_job
    from trainer.env import WorkerEnv

    adapter = work / f"adapter-{way}"
    spec = {
        "job_id": f"bench-dpo-{way}",
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
            # One packed row per step, its length set so the steps are TRL's (`prepare`).
            "micro_batch_size": 1,
            "grad_accum": 1,
            "max_length": cfg["brightrun_max_length"],
            "checkpoint_every": 0,
            "compute_dtype": cfg["dtype"],
            "seed": SEED,
            **({"checkpoint_layers": "all"} if way == "d" else {}),
        },
        "output": {"adapter_name": f"bench-dpo-{way}", "local_dir": str(adapter)},
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
    metrics = [e.data for e in events if e.type == "metrics"]
    dataset, model = started["dataset"], started["model"]
    recompute = model.get("activation_checkpointing", {})
    return {
        "cpu_s": cpu,
        "train_cpu_s": loop_cpu + dataset["reference_pass_cpu_s"],  # loop, save, reference
        "seconds": wall,
        "pairs": dataset["train"]["pairs"],
        "slots": metrics[-1]["tokens_seen_total"],  # computed: each pair's shared prefix once
        "tokens": dataset["train"]["tokens"],  # both sides' tokens, as TRL's
        "shared_prompt_tokens": dataset.get("shared_prompt_tokens", 0),
        "reference_pass_cpu_s": dataset["reference_pass_cpu_s"],
        "optimizer_steps": metrics[-1]["step"],
        "pairs_per_step": cfg["brightrun_pairs_per_step"],
        "logged_losses": [m["loss"] for m in metrics],
        "model_dtype": model["compute_dtype"],
        "recomputed_layers": recompute.get("layers_recomputed", "all"),
        "recompute_reason": recompute.get("reason"),
        "attention": model.get("attention"),
        "adapter": str(adapter),
        "threads": torch.get_num_threads(),
    }


def evaluate(work: Path, adapter: Path) -> dict[str, float]:
    """The DPO loss and reward accuracy of `adapter` on the training pairs, in float32,
    the reference being the base (the adapter disabled): one evaluator for every way."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.shared.tokens import answer_token_masks

    pairs = _read_pairs(work)
    tok = AutoTokenizer.from_pretrained(work / "model")
    base = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter).eval()
    prompts = [p["prompt"] for p in pairs]
    sides = [
        answer_token_masks(tok, prompts, [p[k] for p in pairs]) for k in ("chosen", "rejected")
    ]

    def logp(ids: list[int], mask: list[bool]) -> float:
        x = torch.tensor([ids])
        lp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)
        picked = lp.gather(1, x[0, 1:, None]).squeeze(1)
        return float(picked[torch.tensor(mask[1:], dtype=torch.bool)].sum())

    with torch.no_grad():
        policy = [[logp(*s) for s in side] for side in sides]
        with model.disable_adapter():
            ref = [[logp(*s) for s in side] for side in sides]
    delta = torch.tensor(policy[0]) - torch.tensor(ref[0]) - torch.tensor(policy[1])
    delta += torch.tensor(ref[1])
    return {
        "eval_dpo_loss": float(-F.logsigmoid(BETA * delta).mean()),
        "eval_reward_accuracy": float((delta > 0).float().mean()),
    }


def prepare(work: Path, n_pairs: int) -> dict[str, Any]:
    """The pairs and model; TRL's max length (the longest side, no truncation) and
    BrightRun's: the shortest that packs the pairs into as many rows as TRL takes steps."""
    from transformers import AutoTokenizer

    from trainer import preference as P
    from trainer.data import pack_bfd
    from trainer.shared.tiny import build_tiny_chat_model

    build_tiny_chat_model(work / "model", seed=SEED, hidden_size=512, num_layers=2)
    pairs = make_pairs(n_pairs)
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    tok = AutoTokenizer.from_pretrained(work / "model")
    rows = [P.PairRow(**p) for p in pairs]
    samples, _ = P.tokenize_pairs(tok, rows, 1 << 20)
    longest = max(max(len(s.chosen), len(s.rejected)) for s in samples)
    P.share_prompts(samples)  # as BrightRun lays the pairs out (every layer is attention)
    lengths = [len(s) for s in samples]
    steps = math.ceil(n_pairs / PAIRS_PER_STEP)
    row = max(longest, math.ceil(sum(lengths) / steps / 2))
    while len(bins := pack_bfd(lengths, 2 * row)) > steps:
        row += 1
    cfg = {
        "pairs": n_pairs,
        "max_length": longest + 8,
        "optimizer_steps": steps,
        "brightrun_max_length": row,
        "brightrun_pairs_per_step": sorted(len(b) for b in bins),
    }
    (work / "cfg.json").write_text(json.dumps(cfg))
    return cfg


def child(way: str, work: Path) -> None:
    import torch

    torch.set_num_threads(1)
    cfg = json.loads((work / "cfg.json").read_text())
    run = run_trl if way in "ab" else run_brightrun
    result = run(way, work, cfg)
    result.update(evaluate(work, Path(result["adapter"])))
    (work / f"{way}.json").write_text(json.dumps(result))


def summarise(cfg: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ways: dict[str, Any] = {}
    for way, r in results.items():
        losses = r.pop("logged_losses")
        steps = r["pairs_per_step"]
        ways[NAMES[way]] = {
            "pairs_per_cpu_s": round(r["pairs"] / r["cpu_s"], 3),
            "pairs_per_s": round(r["pairs"] / r["seconds"], 3),
            "train_pairs_per_cpu_s": round(r["pairs"] / r["train_cpu_s"], 3),
            "slots_per_real_token": round(r["slots"] / r["tokens"], 3),
            "pairs_per_optimizer_step": steps[0] if len(steps) == 1 else f"{steps[0]}-{steps[-1]}",
            "logged_loss_mean": round(sum(losses) / len(losses), 4),
            "logged_loss_last_step": round(losses[-1], 4),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()},
        }
    out: dict[str, Any] = {"setup": cfg, "ways": ways}
    rates = {"cpu": "pairs_per_cpu_s", "wall": "pairs_per_s", "train_cpu": "train_pairs_per_cpu_s"}
    for label, (ours, theirs) in {
        "vs_trl_best": ("c", "b"),
        "vs_trl_defaults": ("c", "a"),
        "same_recompute_vs_trl_defaults": ("d", "a"),
    }.items():
        if ours in results and theirs in results:
            o, t = ways[NAMES[ours]], ways[NAMES[theirs]]
            out["ratio_" + label] = {k: round(o[v] / t[v], 3) for k, v in rates.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 pairs: a few minutes on 2 cores")
    ap.add_argument("--pairs", type=int, default=0, help="pairs to train on (default 512)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--ways", default="abcd", help="which of a, b, c, d to run (default all)")
    ap.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="compute dtype of every way (default: the trainer's rule for this CPU)",
    )
    ap.add_argument(
        "--trl-options",
        default="{}",
        help='JSON of DPOConfig settings per TRL way, for ablations, e.g. \'{"b": '
        '{"precompute_ref_log_probs": true}}\'',
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.work))
        return
    n = args.pairs or (64 if args.quick else 512)
    dtype, why = describe_compute_dtype(args.dtype)
    print(f"compute dtype: {dtype} ({why})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        work = Path(tmp)
        cfg = prepare(work, n)
        cfg.update(dtype=dtype, dtype_reason=why, trl_options=json.loads(args.trl_options))
        (work / "cfg.json").write_text(json.dumps(cfg))
        cfg["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        results = {}
        for way in args.ways:
            t0 = time.monotonic()
            cmd = [sys.executable, __file__, "--child", way, "--work", str(work)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)
            results[way] = json.loads((work / f"{way}.json").read_text())
            results[way]["process_wall_s"] = time.monotonic() - t0
        cfg["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(summarise(cfg, results), indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
