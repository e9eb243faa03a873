"""GRPO speed: BrightRun's GRPO against TRL's `GRPOTrainer`, same prompts and steps.

    python bench/grpo.py [--quick] [--steps N] [--json FILE] [--dtype D] [--ways abc]

Three ways, each in its own process, one after the other in the same run:

  (a) TRL `GRPOTrainer` (trl 1.16) defaults: completions sampled with transformers'
      `generate` on the padded batch (every prompt prefilled once per completion), scored
      padded, every layer recomputed in the backward (`gradient_checkpointing` defaults
      to on in TRL's configs);
  (b) TRL's best configuration on this machine (`TRL_BEST`): the same with gradient
      checkpointing off (the memory allows it here);
  (c) BrightRun (`trainer.actions.run_job`, method grpo) with its defaults: completions
      sampled by `trainer.grpo_sampling.LeanSampler` (each prompt prefilled once, its KV
      cache shared by its completions, a plain decode loop drawing what `generate`
      draws), scored with each prompt laid out once before its completions
      (`trainer.grpo.group_rows`), only the layers whose activations do not fit
      recomputed (here none).

Same for all: the model (a randomly initialised Qwen2-architecture model built on the spot,
hidden 512, 2 layers, the tiny chat tokenizer), the compute dtype (one per run, by the
trainer's rule: bfloat16 where the CPU has native bf16, float32 elsewhere; printed), LoRA r
16 / alpha 32 / dropout 0 on every linear layer of the blocks, learning rate 2e-2 constant,
the loss (dapo, epsilon 0.2, no KL: both trainers' defaults), rewards scaled per group,
`GROUP` completions per prompt, at most `COMPLETION` new tokens each, temperature 1, top_p
1, top_k 50 (BrightRun's `POLICY_TOP_K`, given to TRL, whose default is none),
`PROMPTS_PER_STEP` prompts per optimizer step, and the same prompts and number
of steps. The task has a verifiable answer: every prompt asks for the letter `a` written
many times; a completion's reward is its fuzzy match to "aaaaaaaa" (the `text_similarity`
grader of `trainer.shared.graders`, which TRL's reward function calls too).

Each way runs with one torch thread (the machine is shared: wall-clock rates move with
other work, CPU time much less). Measured: optimizer steps per CPU-second and per wall
second, end to end (model load, training, the adapter saved), and per CPU-second of the
training alone (`train_cpu`: TRL's `train()`, BrightRun's loop from its `started` event;
both with the adapter saved), the completions' mean length
and the mean reward of the first and the last four steps as each trainer logged them.
Ratios are BrightRun's rate over a TRL way's, in the same run: `vs_trl_best` = (c)/(b) is
the headline, `vs_trl_defaults` = (c)/(a).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.trainer import describe_compute_dtype  # noqa: E402
from trainer.grpo_sampling import POLICY_TOP_K  # noqa: E402

SEED = 0
GROUP = 8
COMPLETION = 16
PROMPTS_PER_STEP = 2
LR = 2e-2
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GRADER = {
    "type": "text_similarity",
    "name": "close",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "evaluation_metric": "fuzzy_match",
}
TRL_BEST = {"gradient_checkpointing": False}
NAMES = {"a": "trl_defaults", "b": "trl_best", "c": "brightrun_defaults"}


def make_prompts(n: int) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": f"Write the letter a, {i}."}], "answer": "a" * 8}
        for i in range(n)
    ]


def _reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """TRL's reward function: the same grader on each completion's text."""
    from trainer.shared import graders as G

    g = G.parse(GRADER)
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [
        G.grade(g, G.make_sample(t), {"answer": a}, G.Runners()).value
        for t, a in zip(texts, answer, strict=True)
    ]


def run_trl(way: str, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    options = {**(TRL_BEST if way == "b" else {})}
    args = GRPOConfig(
        output_dir=str(work / f"trl-{way}"),
        use_cpu=True,
        model_init_kwargs={"dtype": cfg["dtype"]},
        bf16=cfg["dtype"] == "bfloat16",
        per_device_train_batch_size=GROUP * PROMPTS_PER_STEP,
        gradient_accumulation_steps=1,
        num_generations=GROUP,
        max_completion_length=COMPLETION,
        temperature=1.0,
        top_p=1.0,
        top_k=POLICY_TOP_K,
        loss_type="dapo",
        epsilon=0.2,
        beta=0.0,
        scale_rewards="group",
        max_steps=cfg["steps"],
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
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
    rows = [{"prompt": r["messages"], "answer": r["answer"]} for r in make_prompts(cfg["prompts"])]
    adapter = work / f"adapter-{way}"
    cpu0, wall0 = time.process_time(), time.monotonic()
    tok = AutoTokenizer.from_pretrained(work / "model")
    trainer = GRPOTrainer(
        model=str(work / "model"),
        reward_funcs=_reward,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora,
    )
    train_cpu0 = time.process_time()
    trainer.train()
    trainer.model.save_pretrained(adapter)
    train_cpu = time.process_time() - train_cpu0
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {
        "cpu_s": cpu,
        "train_cpu_s": train_cpu,  # train(), the adapter saved
        "seconds": wall,
        "optimizer_steps": trainer.state.global_step,
        "rewards": [h["reward"] for h in logs],
        "completion_lengths": [h.get("completions/mean_length", 0.0) for h in logs],
        "model_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "recomputed_layers": "all" if args.gradient_checkpointing else "none",
        "trl_options": options,
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

    import trainer.grpo  # noqa: F401
    import trainer.kernels  # noqa: F401
    import trainer.loop  # noqa: F401
    import trainer.setup  # noqa: F401
    import trainer.train  # noqa: F401
    from trainer.actions import run_job
    from trainer.env import WorkerEnv

    path = work / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_prompts(cfg["prompts"])))
    spec = {
        "job_id": f"bench-grpo-{way}",
        "model": {"name_or_path": str(work / "model")},
        "method": "grpo",
        "grading": {
            "graders": [GRADER],
            "num_generations": GROUP,
            "max_completion_length": COMPLETION,
            "temperature": 1.0,
            "loss_type": "dapo",
            "epsilon": 0.2,
            "kl_beta": 0.0,
        },
        "data": {"train_path": str(path)},
        "quantization": "none",
        "lora": {**LORA, "target_modules": TARGETS},
        "training": {
            "max_steps": cfg["steps"],
            "learning_rate": LR,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "micro_batch_size": PROMPTS_PER_STEP,
            "grad_accum": 1,
            "max_length": 128,
            "checkpoint_every": 0,
            "compute_dtype": cfg["dtype"],
            "seed": SEED,
        },
        "output": {"adapter_name": f"bench-grpo-{way}", "local_dir": str(work / f"adapter-{way}")},
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
    model = next(e for e in events if e.type == "started").data["model"]
    metrics = [e.data for e in events if e.type == "metrics" and "reward" in e.data]
    return {
        "cpu_s": cpu,
        "train_cpu_s": loop_cpu,  # the loop, the adapter saved
        "seconds": wall,
        "optimizer_steps": metrics[-1]["step"],
        "rewards": [m["reward"] for m in metrics],
        "completion_lengths": [m["completion_length"] for m in metrics],
        "model_dtype": model["compute_dtype"],
        "recomputed_layers": model.get("activation_checkpointing", {}).get(
            "layers_recomputed", "all"
        ),
        "threads": torch.get_num_threads(),
    }


def child(way: str, work: Path) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    cfg = json.loads((work / "cfg.json").read_text())
    result = (run_trl if way in "ab" else run_brightrun)(way, work, cfg)
    (work / f"{way}.json").write_text(json.dumps(result))


def summarise(cfg: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ways: dict[str, Any] = {}
    for way, r in results.items():
        rewards, lengths = r.pop("rewards"), r.pop("completion_lengths")
        ways[NAMES[way]] = {
            "steps_per_cpu_s": round(r["optimizer_steps"] / r["cpu_s"], 4),
            "steps_per_s": round(r["optimizer_steps"] / r["seconds"], 4),
            "train_steps_per_cpu_s": round(r["optimizer_steps"] / r["train_cpu_s"], 4),
            "reward_first_4_steps": round(sum(rewards[:4]) / len(rewards[:4]), 4),
            "reward_last_4_steps": round(sum(rewards[-4:]) / len(rewards[-4:]), 4),
            "completion_length_mean": round(sum(lengths) / len(lengths), 2),
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()},
        }
    out: dict[str, Any] = {"setup": cfg, "ways": ways}
    rates = {"cpu": "steps_per_cpu_s", "wall": "steps_per_s", "train_cpu": "train_steps_per_cpu_s"}
    for label, (ours, theirs) in {"vs_trl_best": ("c", "b"), "vs_trl_defaults": ("c", "a")}.items():
        if ours in results and theirs in results:
            o, t = ways[NAMES[ours]], ways[NAMES[theirs]]
            out["ratio_" + label] = {k: round(o[v] / t[v], 3) for k, v in rates.items()}
    return out


def main() -> None:
    from trainer.shared.tiny import build_tiny_chat_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 steps: a minute or two")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (default 24)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--ways", default="abc", help="which of a, b, c to run (default all)")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.work))
        return
    dtype, why = describe_compute_dtype(args.dtype)
    print(f"compute dtype: {dtype} ({why})", file=sys.stderr, flush=True)
    steps = args.steps or (8 if args.quick else 24)
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        work = Path(tmp)
        build_tiny_chat_model(work / "model", seed=SEED, hidden_size=512, num_layers=2)
        cfg: dict[str, Any] = {
            "steps": steps,
            "prompts": 32,
            "group": GROUP,
            "max_completion_length": COMPLETION,
            "prompts_per_step": PROMPTS_PER_STEP,
            "dtype": dtype,
            "dtype_reason": why,
        }
        (work / "cfg.json").write_text(json.dumps(cfg))
        cfg["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        results = {}
        for way in args.ways:
            cmd = [sys.executable, __file__, "--child", way, "--work", str(work)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)
            results[way] = json.loads((work / f"{way}.json").read_text())
        cfg["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(summarise(cfg, results), indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
