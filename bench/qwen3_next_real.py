"""Qwen3-Next-80B-A3B QLoRA on one GPU, with random weights: peak memory and tokens/s.

Builds the real-size architecture (the published config.json's shapes, from
`trainer.shared.moe_facts.QWEN3_NEXT_80B_A3B`) directly in NF4 on the device, layer by layer
from the meta device (`trainer.moe.build_random_nf4_model`: nothing is downloaded and the
bf16 model never exists), prepares it as the trainer does (k-bit preparation, gradient
checkpointing, LoRA on attention, linear attention and shared expert; optionally on the
routed experts), and times QLoRA steps at micro-batch 1 x 2048 tokens, two ways:
- `single`: one 2048-token sample;
- `packed`: the same 2048 tokens as 8 samples of 256 in one row with their boundaries
  (position ids and `cu_seq_lens_q`, as the trainer's packed batches), linear-attention
  layers restarting per sample (`trainer.packing_hybrid`).

Prints one JSON object (and writes it with `--json FILE`): predicted vs measured weight
memory, peak memory (`torch.cuda.max_memory_allocated`) and tokens/s per way, the
kernels used. `--predict-only` prints the CPU prediction alone (meta device, no weights).
Smaller shapes for a smoke run: `--layers 4 --experts 16 --vocab 4096 --device cpu`.

    python bench/qwen3_next_real.py --json bench/qwen3_next_real.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 1024**3


def build_config(args: argparse.Namespace):
    from transformers import Qwen3NextConfig

    from trainer.shared.moe_facts import QWEN3_NEXT_80B_A3B

    fields = {
        k: v for k, v in QWEN3_NEXT_80B_A3B.items() if k not in ("model_type", "architectures")
    }
    if args.layers:
        fields["num_hidden_layers"] = args.layers
    if args.experts:
        fields["num_experts"] = args.experts
    if args.vocab:
        fields["vocab_size"] = args.vocab
    config = Qwen3NextConfig(**fields)
    config.use_cache = False
    return config


def predicted(config) -> dict:
    from trainer.moe import predict_config_footprint
    from trainer.shared.moe_facts import expert_lora_params

    fp = predict_config_footprint(config)
    return {
        "groups_gib": {k: round(v["bytes"] / GIB, 3) for k, v in fp.items()},
        "params_b": {k: round(v["params"] / 1e9, 4) for k, v in fp.items()},
        "bits_per_param": {k: v["bits_per_param"] for k, v in fp.items()},
        "experts_bf16_total_gib": round(
            (
                fp["total"]["bytes"]
                - fp["routed_experts"]["bytes"]
                + 2 * fp["routed_experts"]["params"]
            )
            / GIB,
            2,
        ),
        "expert_lora_params_r16": expert_lora_params(config, 16),
    }


def make_batches(vocab: int, seq: int, pieces: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, seq), generator=g)
    single = {"input_ids": ids, "labels": ids.clone()}
    size = seq // pieces
    pos = torch.arange(size).repeat(pieces)[None]
    cu = torch.arange(0, seq + 1, size, dtype=torch.int32)
    labels = ids.clone()
    labels[0, size::size] = -100  # a sample's first token is not predicted from the previous one
    packed = {
        "input_ids": ids,
        "labels": labels,
        "position_ids": pos,
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": size,
        "max_length_k": size,
    }
    move = lambda b: {k: v.to(device) if hasattr(v, "to") else v for k, v in b.items()}  # noqa: E731
    return {"single": move(single), "packed": move(packed)}


def time_steps(model, batch, steps: int, device) -> dict:
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(round(loss.item(), 4))
    tokens = batch["input_ids"].numel()
    timed = times[1:] if len(times) > 1 else times  # the first step warms up
    out = {
        "step_s": [round(t, 3) for t in times],
        "tokens_per_s": round(tokens / statistics.median(timed), 1),
        "losses": losses,
    }
    if cuda:
        out["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
    del opt
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--pieces", type=int, default=8, help="samples per packed row")
    p.add_argument("--steps", type=int, default=3, help="steps per way (the first warms up)")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--lora-on-experts", action="store_true")
    p.add_argument("--layers", type=int, default=0, help="override (smoke runs)")
    p.add_argument("--experts", type=int, default=0, help="override (smoke runs)")
    p.add_argument("--vocab", type=int, default=0, help="override (smoke runs)")
    p.add_argument("--predict-only", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    config = build_config(args)
    result: dict = {
        "config": {
            "layers": config.num_hidden_layers,
            "experts": config.num_experts,
            "vocab": config.vocab_size,
            "seq": args.seq,
            "micro_batch": 1,
            "lora_r": args.r,
            "lora_on_experts": args.lora_on_experts,
        }
    }
    result["predicted"] = predicted(config)
    if args.predict_only:
        print(json.dumps(result, indent=2))
        return

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from trainer.kernels import register_attention
    from trainer.moe import (
        add_expert_lora,
        build_random_nf4_model,
        memory_report,
        peft_module_targets,
    )
    from trainer.packing_hybrid import enable_sequence_boundaries
    from trainer.shared.arch import capabilities

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        result["device_name"] = torch.cuda.get_device_name(device)
    t0 = time.perf_counter()
    model = build_random_nf4_model(config, device, seed=0)
    result["build_s"] = round(time.perf_counter() - t0, 1)
    model.config._attn_implementation = register_attention()  # sdpa per sample on packed rows
    measured = memory_report(model)
    result["measured_weights_gib"] = {k: round(v["bytes"] / GIB, 3) for k, v in measured.items()}
    if cuda:
        result["allocated_after_build_gib"] = round(torch.cuda.memory_allocated() / GIB, 2)
        result["peak_during_build_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    result["linear_attention"] = enable_sequence_boundaries(model)
    result["kernels"] = {
        "flash_linear_attention": importlib.util.find_spec("fla") is not None,
        "causal_conv1d": importlib.util.find_spec("causal_conv1d") is not None,
        "flash_attn": importlib.util.find_spec("flash_attn") is not None,
    }

    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    caps = capabilities(config)
    lora = LoraConfig(
        r=args.r,
        lora_alpha=2 * args.r,
        lora_dropout=0.0,
        target_modules=list(caps.lora_targets),
        task_type="CAUSAL_LM",
    )
    with peft_module_targets():
        model = get_peft_model(model, lora)
    if args.lora_on_experts:
        result["expert_lora"] = add_expert_lora(model, r=args.r, alpha=2 * args.r)
    result["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cuda:
        result["allocated_after_prepare_gib"] = round(torch.cuda.memory_allocated() / GIB, 2)

    model.train()
    for way, batch in make_batches(config.vocab_size, args.seq, args.pieces, device).items():
        result[way] = time_steps(model, batch, args.steps, device)
    result["predicted_vs_measured_weights"] = round(
        result["measured_weights_gib"]["total"] / result["predicted"]["groups_gib"]["total"], 4
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
