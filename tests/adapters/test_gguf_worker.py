"""GGUF export by a `gguf` job on the endpoint, checked by llama.cpp itself: the real local
endpoint (a process running the trainer's handler, CPU) with the controller's limit lowered
to 0 parameters (`GGUF_LOCAL_MAX_PARAMS`), so the 256-wide tiny model of `test_gguf` is
merged, written and quantised by the worker, not here.

- f16: the job reports its stages in order (`progress` events, the write's share rising to
  1), `gguf_job_status` gives the stored GGUF and Modelfile with their sizes and signed
  links, and llama.cpp answers with the reference's greedy tokens, logits within
  `F16_LOGIT_TOL` (the merge ran in float32: the local endpoint has room).
- Q8_0 from `brightrun export gguf` with the single-upload limit (`GGUF_MAX_FILE_MB`) at
  1 MiB: the plan says how many files, the command follows the job until it completed and
  copies the split GGUF's files, each under the limit, and a Modelfile saying how to join
  them for Ollama; llama.cpp loads them from the first file and agrees with the reference
  as often as the controller's export must.
- A job the worker fails (an adapter of another base) says why in its status, and
  `brightrun export gguf-status` exits 1 with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import db, export, queries
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.db import repo
from core.users import LOCAL_ACTOR
from tests.adapters.test_gguf import (  # noqa: F401 - fixtures
    base,
    check_agreement,
    check_exact,
    llama,
    lora,
    reference,
)
from tests.jobs.stack import Stack, make_stack
from trainer.shared.files import gguf_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stacked = make_stack(tmp_path_factory.mktemp("gguf-worker"), workers=1)
    stack = next(stacked)
    stack.settings = stack.settings.model_copy(
        update={"gguf_local_max_params": 0, "sync_interval_s": 0.3}
    )
    try:
        yield stack
    finally:
        stacked.close()


def add_version(stack: Stack, base_model: Path, lora_dir: Path, name: str, vid: str) -> str:
    """`name` v1 on `base_model`, the PEFT files of `lora_dir` in storage."""
    store = make_blob_store(stack.settings)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        store.put_file("adapters", adapter_key("local", vid, f), lora_dir / f, "application/json")
    with db.session_scope(stack.settings) as s:
        job = repo.create_job(
            LOCAL_ACTOR, s, base_model=str(base_model), spec={}, adapter_name=name
        )
        repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name=name,
            base_model=str(base_model),
            job_id=job.id,
            version_id=vid,
            storage_prefix=adapter_prefix("local", vid),
            size_bytes=(lora_dir / "adapter_model.safetensors").stat().st_size,
        )
    return vid


@pytest.fixture(scope="module")
def version(stack: Stack, base: Path, lora: Path) -> str:  # noqa: F811
    """`support-bot` v1 on the 256-wide tiny model, its PEFT files in storage."""
    return add_version(stack, base, lora, "support-bot", "av-ggufjob0001")


def cli_env(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, where: Path, max_file_mb: float = 5120
) -> None:
    """The command line's settings: the stack's, the GGUF limit at 0, the largest file a
    job uploads in one piece `max_file_mb`."""
    s = stack.settings
    env = {
        "BRIGHTRUN_DATA_DIR": str(s.data_dir),
        "GPU_CLUSTER_API_URL": s.gpu_cluster_api_url,
        "GPU_CLUSTER_API_KEY": s.gpu_cluster_api_key.get_secret_value(),
        "PUBLIC_BASE_URL": s.public_base_url,
        "LOCAL_DEVICE": "cpu",
        "GGUF_LOCAL_MAX_PARAMS": "0",
        "SYNC_INTERVAL_S": "0.3",
        "GGUF_MAX_FILE_MB": str(max_file_mb),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(where)  # no stray .env


def _query(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    return {"path": unquote(parts.path), **dict(parse_qsl(parts.query))}


def test_f16_written_by_a_worker_job_answers_like_transformers_and_peft(
    stack: Stack,
    version: str,
    reference: list[dict[str, Any]],  # noqa: F811
    tmp_path: Path,
) -> None:
    plans = export.gguf_plans(LOCAL_ACTOR, stack.settings, version)
    assert [p.where for p in plans] == ["worker"] * 4 + ["controller"]  # the LoRA alone: here
    done = export.export_gguf(LOCAL_ACTOR, stack.settings, version, variant="f16")
    assert done.job_id and done.files == [] and done.label == "support-bot v1"
    job = stack.wait_end(done.job_id)
    assert job.status == "COMPLETED", job.failure_message

    events = stack.events(done.job_id)
    assert events[0].type == "started" and events[0].data["model"]["dtype"] == "float32"
    progress = [e.data for e in events if e.type == "progress"]
    stages = [p["stage"] for p in progress]
    assert stages[0] == "merge" and stages[-1] == "upload", stages
    assert stages == sorted(stages, key=["merge", "write", "upload"].index), stages
    writes = [p["fraction"] for p in progress if p["stage"] == "write"]
    assert writes == sorted(writes) and writes[-1] == 1.0 and len(writes) >= 2, writes
    assert {p["steps"] for p in progress} == {3}  # f16: merge, write, upload
    with db.session_scope(stack.settings) as s:  # the Jobs page's and `jobs show`'s lines
        lines = [e.summary for e in queries.event_log(LOCAL_ACTOR, s, done.job_id)]
    assert "write: stage 2 of 3, 100%" in lines and "upload: stage 3 of 3, 100%" in lines

    status = export.gguf_job_status(LOCAL_ACTOR, stack.settings, done.job_id)
    assert status.done and status.fraction == 1.0 and status.failure is None
    assert [f.name for f in status.files] == ["Modelfile", "support-bot-v1-f16.gguf"]
    modelfile, gguf_file = status.files
    result = events[-1].data
    assert result["files"]["support-bot-v1-f16.gguf"] == gguf_file.size
    assert gguf_file.key == f"local/jobs/{done.job_id}/gguf/support-bot-v1-f16.gguf"
    store = make_blob_store(stack.settings)
    q = _query(gguf_file.url)
    store.verify("GET", "adapters", gguf_file.key, q["exp"], q["sig"])  # a valid signed link
    assert (
        store.get_bytes("adapters", modelfile.key)
        .decode()
        .startswith("FROM ./support-bot-v1-f16.gguf\n")
    )
    local = tmp_path / "job.gguf"
    store.download_to("adapters", gguf_file.key, local)
    with llama(local) as model:
        worst = check_exact(model, reference)
    print(f"\nworker f16 GGUF: {gguf_file.size} bytes, largest logit difference {worst:.4f}")


def test_cli_follows_a_split_q8_0_job_and_copies_its_files(
    stack: Stack,
    version: str,
    reference: list[dict[str, Any]],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the single-upload limit at 1 MiB, the ~1.5 MB Q8_0 file is written, uploaded
    and copied as llama.cpp's split GGUF, which llama.cpp loads from its first file."""
    from typer.testing import CliRunner

    from cli import app

    cli_env(stack, monkeypatch, tmp_path, max_file_mb=1.0)
    plan = CliRunner().invoke(app, ["export", "gguf", version, "--quant", "Q8_0", "--plan-only"])
    split = re.search(r"in (\d+) files \(split GGUF\)", plan.output)
    assert plan.exit_code == 0 and split, plan.output
    shards = gguf_files("support-bot-v1", "Q8_0", int(split.group(1)))
    out = tmp_path / "o"
    run = CliRunner().invoke(app, ["export", "gguf", version, "--quant", "Q8_0", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "completed: done" in run.output.splitlines(), run.output
    assert shards[0] in run.output and "sig=" in run.output
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", *shards]
    assert all((out / n).stat().st_size <= 2**20 for n in shards)
    modelfile = (out / "Modelfile").read_text()
    assert f"llama-gguf-split --merge {shards[0]} support-bot-v1-Q8_0.gguf" in modelfile
    assert "FROM ./support-bot-v1-Q8_0.gguf" in modelfile
    with llama(out / shards[0]) as model:
        assert model.metadata["general.file_type"] == "7"  # LLAMA_FTYPE_MOSTLY_Q8_0
        assert model.metadata["split.count"] == str(len(shards))
        check_agreement(model, reference, "Q8_0")


def test_a_failed_job_says_why_and_the_command_exits_1(
    stack: Stack,
    lora: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli import app

    # The 256-wide model's adapter on the stack's 64-wide tiny model: the worker refuses it.
    vid = add_version(stack, stack.model, lora, "mismatch", "av-ggufjob0002")
    done = export.export_gguf(LOCAL_ACTOR, stack.settings, vid, variant="Q4_K_M")
    assert done.job_id and stack.wait_end(done.job_id).status == "FAILED"
    status = export.gguf_job_status(LOCAL_ACTOR, stack.settings, done.job_id)
    assert status.done and status.files == [] and status.fraction < 1.0
    assert "does not fit base model" in (status.failure or ""), status
    cli_env(stack, monkeypatch, tmp_path)
    run = CliRunner().invoke(app, ["export", "gguf-status", done.job_id])
    assert run.exit_code == 1 and "does not fit base model" in run.output, run.output
