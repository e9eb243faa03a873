"""`brightrun plan` from the command line."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from cli import app
from core.planner import TINY_DIR_NAME, TINY_ID


def _plan(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["plan", *args])
    return r.exit_code, r.output


def test_plan_prints_the_breakdown_verdicts_time_and_cost(data_dir) -> None:
    code, out = _plan(
        "--model",
        "Qwen/Qwen2.5-7B-Instruct",
        "--quant",
        "nf4",
        "--max-length",
        "2048",
        "--batch",
        "2",
        "--rows",
        "2000",
        "--tokens",
        "600",
        "--budget",
        "5",
    )
    assert code == 0, out
    assert "peak GPU memory:" in out and "Base weights (linear layers)" in out
    assert "Optimizer state (AdamW)" in out and "H100 SXM 80 GB" in out
    assert re.search(r"\$\d+\.\d\d-\$\d+\.\d\d", out)
    assert "recommended GPU:" in out and "RunPod executionTimeout:" in out


def test_plan_json_for_the_dashboard(data_dir) -> None:
    code, out = _plan(
        "--model",
        "Qwen/Qwen3-8B",
        "--quant",
        "none",
        "--batch",
        "1",
        "--lora-r",
        "32",
        "--gpu",
        "A100_80GB",
        "--rows",
        "100",
        "--tokens",
        "1000",
        "--measured",
        "1500",
        "--json",
    )
    assert code == 0, out
    p = json.loads(out)
    assert p["settings"]["quantization"] == "none" and p["settings"]["lora_r"] == 32
    assert [v["gpu"] for v in p["verdicts"]] == ["A100_80GB"]
    assert p["memory"]["total_bytes"] == sum(t["bytes"] for t in p["memory"]["terms"])
    assert p["times"][0]["tokens_per_s"] == 1500 and p["times"][0]["utilisation"] is None


def test_a_model_that_does_not_fit_gets_a_suggestion(data_dir) -> None:
    code, out = _plan(
        "--model", "Qwen/Qwen2.5-72B-Instruct", "--quant", "none", "--gpu", "H100_80GB_SXM"
    )
    assert code == 0
    assert "does not fit" in out and "try: 4-bit (nf4)" in out


def test_qwen3_next_nf4_explains_the_experts(data_dir) -> None:
    code, out = _plan("--model", "Qwen/Qwen3-Next-80B-A3B-Instruct", "--quant", "nf4", "--json")
    assert code == 0
    p = json.loads(out)
    experts = next(t for t in p["memory"]["terms"] if t["key"] == "routed_experts")
    assert "512 experts x 48 layers" in experts["detail"]
    assert p["settings"]["experts_quantized"] in (True, False)


def test_what_cannot_be_planned_exits_2_with_the_reason(data_dir) -> None:
    code, out = _plan("--model", "someone/unknown-model")
    assert code == 2 and "cannot estimate someone/unknown-model" in out
    code, out = _plan("--model", "Qwen/Qwen3-8B", "--lora-r", "0")
    assert code == 2 and "LoRA rank" in out
    code, out = _plan("--model", "Qwen/Qwen3-8B", "--rows", "10")
    assert code == 2 and "--tokens" in out


def test_plan_takes_token_statistics_from_a_stored_dataset(data_dir, tmp_path) -> None:
    from trainer.shared.tiny import build_tiny_chat_model

    build_tiny_chat_model(data_dir / "models" / TINY_DIR_NAME, seed=0)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}."},
            ]
        }
        for i in range(40)
    ]
    f = tmp_path / "sums.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(app, ["dataset", "add", str(f), "--model", TINY_ID])
    assert r.exit_code == 0, r.output
    ds_id = r.output.split()[1]
    code, out = _plan("--model", TINY_ID, "--dataset", ds_id, "--gpu", "A40_48GB", "--json")
    assert code == 0, out
    t = json.loads(out)["times"][0]
    assert 0 < t["training_tokens"] < 40 * 100


def test_plan_times_from_the_users_finished_jobs_unless_measured_or_no_history(data_dir) -> None:
    from core import db
    from core.db import repo
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR

    model, args = "Qwen/Qwen2.5-0.5B-Instruct", ("--rows", "100", "--tokens", "300", "--json")
    settings = load_settings()
    db.upgrade(settings)
    with db.session_scope(settings) as s:
        job = repo.create_job(
            LOCAL_ACTOR, s, base_model=model, spec={"quantization": "nf4"}, gpu_type="H100_80GB_SXM"
        )
        repo.update_job(LOCAL_ACTOR, s, job.id, status="COMPLETED", tokens_per_s=1200.0)

    def times(*extra: str) -> list[dict]:
        code, out = _plan(
            "--model", model, "--gpu", "H100_80GB_SXM", "--gpu", "A100_80GB", *args, *extra
        )
        assert code == 0, out
        return json.loads(out)["times"]

    h100, a100 = times()
    assert h100["tokens_per_s"] == 1200.0 and h100["seconds"] == 100 * 300 / 1200.0
    assert h100["basis_text"] == "measured: median of 1 finished job on this GPU (1,200 tokens/s)"
    assert a100["basis_text"].startswith("default utilisation 30%")
    assert times("--measured", "600")[0]["tokens_per_s"] == 600.0  # given by hand wins
    assert times("--no-history")[0]["utilisation"] == 0.30


def test_plan_shows_the_price_range_over_the_endpoints_gpu_types(data_dir, monkeypatch) -> None:
    monkeypatch.setenv("GPU_CLUSTER_API_URL", "https://api.runpod.ai/v2/abc123")
    monkeypatch.setenv("GPU_TYPE", "H100_80GB_PCIE")
    monkeypatch.setenv("ENDPOINT_GPU_TYPES", '["A100_80GB","H100_80GB_PCIE"]')
    args = ("--model", "Qwen/Qwen2.5-7B-Instruct", "--rows", "2000", "--tokens", "600")
    code, out = _plan(*args)
    assert code == 0, out
    assert "price range: the endpoint may run it on H100_80GB_PCIE, A100_80GB: $2.74-$4.18/h" in out
    code, out = _plan(*args, "--json")
    assert "A100_80GB" in json.loads(out)["price_range"]
