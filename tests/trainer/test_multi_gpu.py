"""Multi-GPU training on the CPU: torchrun with 2 processes (gloo) on the tiny model.

What a user would notice: 2 processes train the same adapter as 1 with the same global
batch (loss curve within 1e-4 relative, LoRA weights within 1e-3 absolute: float sums in
another order, amplified by Adam); a job stopped mid-run resumes from its sharded
checkpoint to the same adapter as an uninterrupted run, and a different GPU count is
refused with the reason; a rank killed mid-step ends the job FAILED naming it, well within
the collective timeout, with no process left, and one that hangs after it. QLoRA too, its
4-bit base sharded (each process holds half its packed weights, a gathered layer is
bit-identical to the whole one) or replicated: the same adapter as one process, and the
same resume. Events come once, from rank 0.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import make_spec, run

pytestmark = pytest.mark.slow

LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-3


def _env(tmp: Path, **over: Any) -> Any:
    from trainer.env import WorkerEnv

    fields = {
        "model_cache_dir": tmp / "models",
        "checkpoint_dir": tmp / "checkpoints",
        "adapter_dir": None,
        "cached_models_dir": tmp / "hf-hub",
        "collective_timeout_s": 60.0,
        **over,
    }
    return WorkerEnv(**fields)


def _spec(model: Path, data: Path, out: Path, gpus: int, **over: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {"gpus": gpus, "sharding": "fsdp"} if gpus > 1 else {}
    return make_spec(
        model,
        data,
        device="cpu",
        output={"adapter_name": "toy-adapter", "local_dir": str(out)},
        **{**extra, **over},
    )


def _losses(events: list[dict[str, Any]]) -> list[float]:
    return [e["data"]["loss"] for e in events if e["type"] == "metrics"]


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def _assert_same_adapter(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and wa
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < WEIGHT_ATOL, worst


@pytest.fixture(scope="module")
def singles(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[list, Path]]:
    """The one-process run of the toy job in a quantization (events, adapter folder), made
    once per quantization."""
    from tests.trainer.conftest import toy_rows, write_jsonl

    made: dict[str, tuple[list, Path]] = {}

    def single(quantization: str) -> tuple[list, Path]:
        if quantization not in made:
            tmp = tmp_path_factory.mktemp(f"single-{quantization}")
            data = write_jsonl(tmp / "toy.jsonl", toy_rows())
            spec = _spec(tiny_model, data, tmp / "out", 1, job_id="one", quantization=quantization)
            events = run(spec, _env(tmp))
            assert events[-1]["type"] == "completed", events[-1]
            made[quantization] = events, tmp / "out"
        return made[quantization]

    return single


@pytest.fixture(scope="module")
def single(singles: Callable[[str], tuple[list, Path]]) -> tuple[list, Path]:
    return singles("none")


def test_two_processes_train_the_adapter_one_does(
    tiny_model: Path, toy_data: Path, tmp_path: Path, single: tuple[list, Path]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    events = run(_spec(tiny_model, toy_data, tmp_path / "out", 2, job_id="two"), _env(tmp_path))
    assert events[-1]["type"] == "completed", events[-1]
    assert [e["seq"] for e in events] == list(range(len(events)))  # once each, rank 0's
    started = [e for e in events if e["type"] == "started"]
    assert len(started) == 1
    assert started[0]["data"]["model"]["gpus"] == 2
    assert started[0]["data"]["model"]["sharding"] == "fsdp"
    one, two = _losses(single[0]), _losses(events)
    assert len(one) == len(two) == 6 and two[-1] < two[0]
    assert two == pytest.approx(one, rel=LOSS_RTOL)
    _assert_same_adapter(single[1], tmp_path / "out")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    PeftModel.from_pretrained(base, tmp_path / "out")  # one ordinary PEFT folder


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_resume_from_a_sharded_checkpoint_equals_an_uninterrupted_run(
    tiny_model: Path, toy_data: Path, tmp_path: Path, singles: Any, quantization: str
) -> None:
    single = singles(quantization)
    out = tmp_path / "out"
    spec = _spec(
        tiny_model,
        toy_data,
        out,
        2,
        job_id="cut",
        training={"checkpoint_every": 2},
        quantization=quantization,
    )
    first = run(spec, _env(tmp_path, force_nan_at_step=5))  # stops at step 5, saved at 4
    assert first[-1]["type"] == "failed" and first[-1]["data"]["kind"] == "diverged"
    assert first[-1]["data"]["gpus"] == 2
    ckpts = tmp_path / "checkpoints" / "cut"
    assert (ckpts / "latest").read_text() == "step-0000004"
    assert any((ckpts / "step-0000004" / "shards").iterdir())

    one_gpu = {**spec, "gpus": 1}
    one_gpu.pop("sharding")
    refused = run(one_gpu, _env(tmp_path))[-1]
    assert refused["type"] == "failed" and refused["data"]["kind"] == "bad_input"
    assert "2 GPU" in refused["data"]["message"] and "gpus 2" in refused["data"]["suggestion"]

    again = run(spec, _env(tmp_path))
    assert again[-1]["type"] == "completed", again[-1]
    started = [e for e in again if e["type"] == "started"][-1]  # earlier attempts' re-sent first
    assert started["data"]["resumed_from_step"] == 4
    assert _losses(again)[-2:] == pytest.approx(_losses(single[0])[-2:], rel=LOSS_RTOL)
    _assert_same_adapter(single[1], out)


def _rank_pids(job_id: str) -> dict[int, int]:
    """Rank processes of `job_id` still alive, by rank (their command line names both)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"trainer.rank" in cmd
            and b"trainer.torchrun" not in cmd
            and any(f"brightrun-{job_id}-gpus-".encode() in c for c in cmd)
        ):
            environ = (proc / "environ").read_bytes().split(b"\0")
            rank = next(int(v[5:]) for v in environ if v.startswith(b"RANK="))
            found[rank] = int(proc.name)
    return found


def test_a_rank_killed_mid_step_fails_the_job_naming_it(
    tiny_model: Path, toy_data: Path, tmp_path: Path
) -> None:
    from trainer.handler import events as handler

    timeout = 30.0
    spec = _spec(tiny_model, toy_data, tmp_path / "out", 2, job_id="killed")
    spec["training"]["max_steps"] = 200
    seen, killed_at = [], None
    for event in handler({"id": "rp", "input": spec}, _env(tmp_path, collective_timeout_s=timeout)):
        seen.append(event)
        if event["type"] == "metrics" and event["data"]["step"] == 2:
            pids = _rank_pids("killed")
            assert set(pids) == {0, 1}
            os.kill(pids[1], signal.SIGKILL)
            killed_at = time.monotonic()
    assert killed_at is not None
    final = seen[-1]
    assert final["type"] == "failed", final
    assert final["data"]["rank"] == 1, final
    assert final["data"]["gpus"] == 2
    assert "rank 1 of 2" in final["data"]["message"] and "SIGKILL" in final["data"]["message"]
    assert time.monotonic() - killed_at < timeout
    assert _rank_pids("killed") == {}


def test_a_rank_that_hangs_fails_the_job_after_the_collective_timeout(
    tiny_model: Path, toy_data: Path, tmp_path: Path
) -> None:
    from trainer.handler import events as handler

    timeout = 8.0
    spec = _spec(tiny_model, toy_data, tmp_path / "out", 2, job_id="hung")
    spec["training"]["max_steps"] = 200
    seen, stopped_at = [], None
    for event in handler({"id": "rp", "input": spec}, _env(tmp_path, collective_timeout_s=timeout)):
        seen.append(event)
        if event["type"] == "metrics" and event["data"]["step"] == 2:
            os.kill(_rank_pids("hung")[1], signal.SIGSTOP)  # alive, never answers again
            stopped_at = time.monotonic()
    assert stopped_at is not None
    final = seen[-1]
    assert final["type"] == "failed", final
    assert final["data"]["rank"] == 1, final
    assert "timed out waiting for it" in final["data"]["message"]
    assert time.monotonic() - stopped_at < timeout + 30  # the timeout, then 5 s of grace
    assert _rank_pids("hung") == {}


@pytest.mark.parametrize(("sharding", "strategy"), [("fsdp", "fsdp"), ("auto", "ddp")])
def test_qlora_on_two_processes_trains_the_adapter_one_does(
    tiny_model: Path, toy_data: Path, tmp_path: Path, singles: Any, sharding: str, strategy: str
) -> None:
    """The 4-bit base sharded (`fsdp`: each process holds its half of the packed weights,
    the embeddings whole) or replicated (`ddp`, what `auto` picks for a base this small)."""
    events, out = singles("nf4")
    spec = _spec(tiny_model, toy_data, tmp_path / "out", 2, job_id="q2", quantization="nf4")
    spec["sharding"] = sharding
    two = run(spec, _env(tmp_path))
    assert two[-1]["type"] == "completed", two[-1]
    model = next(e for e in two if e["type"] == "started")["data"]["model"]
    assert (model["sharding"], model["quantization"]) == (strategy, "nf4")
    if strategy == "fsdp":
        assert model["base_bytes_per_gpu"] < model["base_bytes"]
    else:
        assert model["base_bytes_per_gpu"] == model["base_bytes"]
        assert "the nf4 base's 0.0 GiB fit on every GPU" in model["sharding_reason"]
    assert _losses(two) == pytest.approx(_losses(events), rel=LOSS_RTOL)
    _assert_same_adapter(out, tmp_path / "out")


def _shard_nf4_on_rank(rank: int, model: str, port: int, out: str) -> None:
    """One of 2 gloo processes (`mp.spawn`): the tiny model loaded in NF4 and sharded as a
    QLoRA job does it; writes `out/rank-R.json`: its 4-bit weights' packed bytes whole and
    on this rank, whether a gathered layer is bit-identical to the whole one, and one
    forward and backward's loss before and after sharding."""
    import json

    import torch

    from trainer.model import load_for_training, load_tokenizer
    from trainer.parallel import close_group, decoder_layers, init_group
    from trainer.setup import shard_model
    from trainer.shared.spec import JobSpec

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    group = init_group(60.0, cpu=True)
    spec = JobSpec.model_validate(
        _spec(Path(model), Path("rows.jsonl"), Path(out), 2, quantization="nf4")
    )
    torch.manual_seed(0)
    loaded = load_for_training(spec, Path(model), load_tokenizer(Path(model)), sharded=True)
    lm = loaded.model
    packed = {
        n: m.weight.detach().clone()
        for n, m in lm.named_modules()
        if getattr(m._parameters.get("weight"), "quant_state", None) is not None
    }
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(1))

    def loss() -> float:
        value = lm(input_ids=ids, labels=ids).loss
        value.backward()
        return float(value.detach())

    facts = {"whole_loss": loss(), "storage": str(next(iter(packed.values())).dtype)}
    lm.zero_grad(set_to_none=True)
    shard_model(loaded, group, "fsdp", "sharding fsdp set in the job")
    modules = dict(lm.named_modules())
    local = [modules[n].weight.to_local() for n in packed]
    facts["whole_bytes"] = sum(t.numel() * t.element_size() for t in packed.values())
    facts["local_bytes"] = sum(t.numel() * t.element_size() for t in local)
    facts["sharded_loss"] = loss()
    layer = decoder_layers(lm)[1][0]
    layer.unshard()
    facts["gathered_layer_identical"] = [
        torch.equal(modules[n].weight.detach().view(torch.uint8), w.view(torch.uint8))
        for n, w in packed.items()
        if ".layers.0." in n
    ]
    layer.reshard()
    (Path(out) / f"rank-{rank}.json").write_text(json.dumps(facts))
    close_group()


def test_each_process_holds_half_of_the_4bit_base_and_computes_what_the_whole_does(
    tiny_model: Path, tmp_path: Path
) -> None:
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_shard_nf4_on_rank, args=(str(tiny_model), port, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    whole = ranks[0]["whole_bytes"]
    assert ranks[0]["storage"] == "torch.float32"  # bitsandbytes' quant_storage
    assert sum(r["local_bytes"] for r in ranks) == whole
    for r in ranks:
        assert r["local_bytes"] == pytest.approx(whole / 2, rel=0.02)
        assert len(r["gathered_layer_identical"]) == 7  # q, k, v, o, gate, up, down
        assert all(r["gathered_layer_identical"])
        assert r["sharded_loss"] == pytest.approx(r["whole_loss"], rel=LOSS_RTOL)


def test_the_time_limit_stops_every_rank_at_the_same_step(
    tiny_model: Path, toy_data: Path, tmp_path: Path
) -> None:
    spec = _spec(tiny_model, toy_data, tmp_path / "out", 2, job_id="timed")
    spec["training"].update(max_steps=100_000, time_limit_s=4.0)
    events = run(spec, _env(tmp_path, collective_timeout_s=30.0))
    final = events[-1]
    assert final["type"] == "completed", final
    assert final["data"]["reason"] == "time_limit"
    assert 0 < final["data"]["summary"]["steps"] < 100_000
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
