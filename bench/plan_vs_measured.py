"""Predicted vs measured peak GPU memory of QLoRA/LoRA steps, for the planner.

For a few catalog models and settings it builds the real-size architecture with random
weights directly on the GPU (nothing is downloaded: `trainer.moe.build_random_nf4_model`
for nf4, `from_config` on the device for 16-bit), prepares it as the trainer does (k-bit
preparation, gradient checkpointing, LoRA with the trainer's targets, expert LoRA when
asked), runs two optimizer steps of the trainer's own loss (`trainer.loss.batch_loss_sum`,
AdamW) on micro-batch x max-length random tokens, and prints, per configuration:

- predicted peak from `core.planner.estimate_memory` (what the planner shows users);
- the same without CUDA context and allocator headroom, against
  `torch.cuda.max_memory_allocated` (tensors only);
- predicted minus CUDA context, against `torch.cuda.max_memory_reserved`;
- the ratios measured / predicted (the planner aims for within 15%).

    python bench/plan_vs_measured.py [--only 7b-nf4-mb1] [--json FILE]
    python bench/plan_vs_measured.py --smoke   # CPU, one layer, 64 tokens: plumbing only

Record the table in bench/RESULTS.md (planner section) with the date and the GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 1 << 30

# name: (catalog id, quantization, micro-batch, max length, checkpointing, LoRA r, on experts)
CONFIGS = {
    "7b-nf4-mb1": ("Qwen/Qwen2.5-7B-Instruct", "nf4", 1, 2048, True, 16, False),
    "7b-nf4-mb4": ("Qwen/Qwen2.5-7B-Instruct", "nf4", 4, 2048, True, 16, False),
    "7b-nf4-nockpt": ("Qwen/Qwen2.5-7B-Instruct", "nf4", 1, 2048, False, 16, False),
    "8b-bf16-mb1": ("Qwen/Qwen3-8B", "none", 1, 2048, True, 16, False),
    "14b-nf4-mb2-4k": ("Qwen/Qwen2.5-14B-Instruct", "nf4", 2, 4096, True, 64, False),
    "30b-a3b-nf4": ("Qwen/Qwen3-30B-A3B", "nf4", 1, 2048, True, 16, False),
}


def spec_for(model: str, quant: str, mb: int, length: int, ckpt: bool, r: int, experts: bool):
    from trainer.shared.spec import DataSpec, JobSpec, LoraSpec, ModelSpec, OutputSpec, TrainingSpec

    return JobSpec(
        job_id="bench",
        model=ModelSpec(name_or_path=model),
        data=DataSpec(train_path="x"),
        output=OutputSpec(adapter_name="bench"),
        quantization=quant,
        lora=LoraSpec(r=r, lora_on_experts=experts),
        training=TrainingSpec(micro_batch_size=mb, max_length=length, gradient_checkpointing=ckpt),
    )


def run_one(name: str, cfg: tuple, device_name: str, layers: int | None) -> dict:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.planner import describe, estimate_memory, facts_from_config
    from trainer import arch_hooks
    from trainer import data as D
    from trainer.loss import batch_loss_sum
    from trainer.model import build_lora_config, pick_attention, pick_packing
    from trainer.shared import arch

    model_id, quant, mb, length, ckpt, r, experts = cfg
    facts = describe(model_id)
    if layers:  # smoke runs: fewer layers, same widths
        facts = facts_from_config(dict(facts.config, num_hidden_layers=layers), id=model_id)
    spec = spec_for(model_id, quant, mb, length, ckpt, r, experts)
    predicted = estimate_memory(spec, facts)
    context, headroom = predicted.term("cuda_context"), predicted.term("headroom")

    device = torch.device(device_name)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    config = AutoConfig.for_model(**dict(facts.config))
    config.use_cache = False
    caps = arch.capabilities(config)
    packing, _ = pick_packing(spec, caps)
    attn, _ = pick_attention(packing, device)
    config._attn_implementation = attn
    t0 = time.perf_counter()
    if quant == "nf4":
        from trainer.moe import build_random_nf4_model

        model = build_random_nf4_model(config, device)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=ckpt,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        for p in model.parameters():
            p.requires_grad_(False)
        if ckpt:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.enable_input_require_grads()
    model = get_peft_model(model, build_lora_config(spec, caps))
    arch_hooks.post_lora(model, spec, caps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=on_cuda or None)
    gen = torch.Generator().manual_seed(0)
    samples = []
    for i in range(mb):
        ids = torch.randint(10, facts.vocab - 10, (length,), generator=gen).tolist()
        samples.append(
            D.Sample(input_ids=ids, targets=ids[1:] + [D.IGNORE], n_loss=length - 1, row=i + 1)
        )
    batch = D.collate(samples, list(range(mb)), packed=packing != "padded", pad_id=0, device=device)
    model.train()
    for _ in range(2):
        loss = batch_loss_sum(model, batch, device, torch.bfloat16) / batch.n_loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    row = {
        "config": name,
        "model": model_id,
        "quantization": quant,
        "micro_batch": mb,
        "max_length": length,
        "checkpointing": ckpt,
        "lora_r": r,
        "layers": facts.layers,
        "trainable_measured": sum(p.numel() for p in params),
        "trainable_predicted": predicted.lora_params,
        "predicted_gib": round(predicted.total_bytes / GIB, 2),
        "predicted_tensors_gib": round((predicted.total_bytes - context - headroom) / GIB, 2),
        "predicted_reserved_gib": round((predicted.total_bytes - context) / GIB, 2),
        "seconds": round(seconds, 1),
        "device": str(device),
    }
    if on_cuda:
        alloc = torch.cuda.max_memory_allocated(device) / GIB
        reserved = torch.cuda.max_memory_reserved(device) / GIB
        row.update(
            device=torch.cuda.get_device_name(device),
            measured_allocated_gib=round(alloc, 2),
            measured_reserved_gib=round(reserved, 2),
            allocated_vs_predicted=round(alloc / row["predicted_tensors_gib"], 3),
            reserved_vs_predicted=round(reserved / row["predicted_reserved_gib"], 3),
        )
    del model, opt, params, batch
    if on_cuda:
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(CONFIGS), help="run only these")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, one layer, 64 tokens, two configs: checks the script, measures nothing",
    )
    args = ap.parse_args()
    import torch

    names = args.only or list(CONFIGS)
    device, layers = ("cuda", None) if torch.cuda.is_available() else ("cpu", None)
    configs = {n: CONFIGS[n] for n in names}
    if args.smoke:
        device, layers = "cpu", 1
        configs = {
            n: (c[0], c[1], 1, 64, c[4], c[5], c[6])
            for n, c in CONFIGS.items()
            if n in ("7b-nf4-mb1", "8b-bf16-mb1")
        }
    elif device == "cpu":
        sys.exit(
            "no CUDA GPU here: measured peak memory needs one (use --smoke to check the script)"
        )
    rows = []
    for n, c in configs.items():
        row = run_one(n, c, device, layers)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n{'config':16s} {'predicted':>10s} {'tensors':>9s} {'allocated':>10s} {'ratio':>6s} "
        f"{'reserved':>9s} {'ratio':>6s}"
    )
    for r in rows:
        print(
            f"{r['config']:16s} {r['predicted_gib']:>9.2f}G {r['predicted_tensors_gib']:>8.2f}G "
            f"{r.get('measured_allocated_gib', float('nan')):>9.2f}G "
            f"{r.get('allocated_vs_predicted', float('nan')):>6.3f} "
            f"{r.get('measured_reserved_gib', float('nan')):>8.2f}G "
            f"{r.get('reserved_vs_predicted', float('nan')):>6.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
