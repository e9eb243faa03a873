"""`brightrun plan` past one GPU: the smallest count per GPU type, and `--gpus N` plans
memory per GPU and cost for all N."""

from __future__ import annotations

import json

from tests.planner.test_cli_plan import _plan

BIG = ["--model", "Qwen/Qwen2.5-72B-Instruct", "--quant", "none", "--batch", "1", "--no-history"]


def test_plan_names_the_gpu_count_a_big_bf16_job_needs(data_dir) -> None:
    code, out = _plan(*BIG, "--max-length", "8192", "--gpu", "H100_80GB_SXM", "--gpu", "H200_141GB")
    assert code == 0, out
    assert "H100 SXM 80 GB     4 x" in out and "H200 141 GB        2 x" in out
    assert "fewest GPUs at the lowest cost: 2 x H200 141 GB" in out  # 2 x $5.58/h < 4 x $4.18/h


def test_plan_on_n_gpus_is_per_gpu_and_costs_all_of_them(data_dir) -> None:
    tokens = ["--rows", "2000", "--tokens", "800", "--gpu", "H100_80GB_SXM", "--json"]
    code, out = _plan(*BIG, "--max-length", "2048", "--gpus", "3", *tokens)
    assert code == 0, out
    three = json.loads(out)
    assert three["gpus"] == 3 and three["settings"]["sharding"] == "fsdp"
    assert three["verdicts"][0]["verdict"] == "fits"
    assert any(t["key"] == "communication" for t in three["memory"]["terms"])
    cost = three["costs"][0]
    assert cost["usd_high"] == cost["rate_per_s"] * (
        three["times"][0]["seconds_high"] + three["times"][0]["cold_start_high_s"]
    )
    assert cost["rate_per_s"] == 3 * 0.00116
