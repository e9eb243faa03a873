"""The commands that do what only the pages did: `brightrun costs`, `status`, `jobs
relaunch`, `chat-set`, `chat --export`, and the Train page's settings on `train`
(presets, scheduler, warmup, packing, gradient checkpointing, LoRA targets)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from core import db, jobs
from core.db import repo
from core.settings import Settings, load_settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import seed_dataset, seed_job
from tests.ui.test_jobs_page import OOM
from tests.ui.test_playground_page import BASE, HOSTILE, FakeOpenAI, inference  # noqa: F401 - fixture


class _Answers(FakeOpenAI):
    """The stand-in also answering without streaming (as compare-on-a-set asks)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(body)
        if request.get("stream"):
            self.rfile = io.BytesIO(body)  # the streamed answer, as the page gets it
            return super().do_POST()
        self.server.requests.append(request)  # type: ignore[attr-defined]
        self._json(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.server.answer},  # type: ignore[attr-defined]
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
            }
        )


def run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_costs_prints_the_costs_pages_figures(settings: Settings) -> None:
    from core import queries

    seed_job(settings, seed_dataset(settings), cost=0.5, minutes_ago=5)
    r = run("costs")
    assert r.exit_code == 0, r.output
    with db.session_scope(settings) as s:
        sv = queries.spend_view(LOCAL_ACTOR, s, settings)
    assert (
        f"{sv.month}: spent $0.5000 of the ${sv.monthly_budget_usd:,.2f} monthly budget" in r.output
    )
    assert "per GPU type" in r.output and "H100_80GB_PCIE" in r.output
    assert "Serverless against an always-on pod" in r.output
    data = json.loads(run("costs", "--json").output)
    assert data["month_spend_usd"] == sv.month_spend_usd and data["by_model"] == sv.by_model


def test_status_reports_each_part_and_fails_when_one_is_down(
    settings: Settings, monkeypatch
) -> None:
    monkeypatch.setenv("GPU_CLUSTER_API_URL", "http://127.0.0.1:9/v2/none")
    monkeypatch.setenv("INFERENCE_URL", "http://127.0.0.1:9/v1")
    r = run("status", "--json")
    assert r.exit_code == 1, r.output
    parts = {p["part"]: p["ok"] for p in json.loads(r.output)}
    assert parts["database"] is True and parts["storage"] is True
    assert False in parts.values()


def test_relaunch_uses_the_suggested_settings(settings: Settings, endpoint) -> None:
    endpoint.script = lambda spec: (
        {"chunks": 2, "interval_s": 0.01, "final": OOM}
        if spec["training"]["micro_batch_size"] == 4
        else {"chunks": 100, "interval_s": 1}
    )
    job = jobs.submit(
        LOCAL_ACTOR,
        load_settings(),
        dataset_id=seed_dataset(settings),
        model="Qwen/Qwen2.5-0.5B-Instruct",
        adapter_name="oom-bot",
        training={"micro_batch_size": 4, "grad_accum": 4},
    )
    for _ in range(100):
        if jobs.sync(LOCAL_ACTOR, load_settings(), job.id).status == "FAILED":
            break
        time.sleep(0.1)
    r = run("jobs", "relaunch", job.id)
    assert r.exit_code == 0, r.output
    with db.session_scope(settings) as s:
        new = next(j for j in repo.list_jobs(LOCAL_ACTOR, s) if j.id != job.id)
    assert new.parent_job_id == job.id and f"relaunch of {job.id}" in r.output
    assert (new.spec["training"]["micro_batch_size"], new.spec["training"]["grad_accum"]) == (2, 8)


def test_train_takes_the_presets_and_the_train_pages_settings(settings: Settings, endpoint) -> None:
    ds = seed_dataset(settings)
    r = run(
        "train",
        "--dataset",
        ds,
        "--model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--preset",
        "Thorough",
        "--lr",
        "3e-4",
        "--scheduler",
        "linear",
        "--warmup",
        "0.1",
        "--no-packing",
        "--no-gradient-checkpointing",
        "--target-modules",
        "q_proj,v_proj",
    )
    assert r.exit_code == 0, r.output
    with db.session_scope(settings) as s:
        spec = repo.list_jobs(LOCAL_ACTOR, s)[0].spec
    t, lora = spec["training"], spec["lora"]
    assert (lora["r"], lora["alpha"], t["epochs"]) == (64, 128.0, 3.0)  # the preset
    assert t["learning_rate"] == 3e-4  # given wins over the preset's 1e-4
    assert (t["lr_scheduler"], t["warmup_ratio"], t["packing"], t["gradient_checkpointing"]) == (
        "linear",
        0.1,
        False,
        False,
    )
    assert lora["target_modules"] == ["q_proj", "v_proj"] and spec["data"]["eval_fraction"] == 0.1
    bad = run(
        "train", "--dataset", ds, "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--preset", "Fastest"
    )
    assert bad.exit_code == 2 and "unknown preset 'Fastest'" in bad.output


def test_the_presets_are_the_train_pages(settings: Settings) -> None:
    """The Train page's preset selector offers core.jobs.PRESETS, and choosing one sets the
    widgets to the values `brightrun train --preset` applies."""
    from components.train import PRESETS as PAGE
    from components.train import widget_state
    from core.jobs import PRESETS, preset

    assert PAGE == list(PRESETS)
    for name, fields in PRESETS.items():
        state = widget_state(preset(name))
        for part, values in fields.items():
            if part == "eval_fraction":
                assert state["train.eval_fraction"] == values, name
                continue
            for field, value in values.items():
                key = {"r": "train.lora_r", "alpha": "train.lora_alpha"}.get(
                    field, f"train.{field}"
                )
                assert state[key] == value, (name, field)


def test_chat_set_and_chat_export(inference, tmp_path: Path) -> None:  # noqa: F811
    inference.RequestHandlerClass = _Answers
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2 plus 3?\t5\nSay hi\n")
    out = tmp_path / "set.jsonl"
    r = run("chat-set", "--base", "--prompts", str(prompts), "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["prompt"], x["reference"]) for x in rows] == [
        ("What is 2 plus 3?", "5"),
        ("Say hi", None),
    ]
    assert rows[0]["answers"] == {f"{BASE} (base)": HOSTILE}
    talk = tmp_path / "talk.jsonl"
    r = run("chat", "--base", "--export", str(talk), "hello")
    assert r.exit_code == 0, r.output
    line = json.loads(talk.read_text())
    assert line["model"] == BASE and line["messages"][-2:] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": HOSTILE},
    ]
