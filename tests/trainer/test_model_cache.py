"""Base models from the hub go through the model cache atomically: a training job's
download lands in `MODEL_CACHE_DIR` whole (temporary folder, marker, rename), two workers
downloading at once leave one good copy, a broken-off old download is replaced, and the
`started` event says where the model came from (hub, then cache) and its folder."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import make_spec, run
from trainer.cache import MARKER
from trainer.model import resolve_model_path
from trainer.shared.spec import ModelSpec

HUB_ID = "tiny-org/tiny-chat"


@pytest.fixture
def hub(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The hub, faked: a download copies the tiny model's files; the destinations are kept."""
    import trainer.cache

    dests: list[Path] = []

    def download(repo_id: str, revision: str | None, dest: Path, token: str | None) -> None:
        assert repo_id == HUB_ID
        dests.append(dest)
        shutil.copytree(tiny_model, dest)

    monkeypatch.setattr(trainer.cache, "download_snapshot", download)
    return dests


def _leftovers(cache: Path) -> list[str]:
    return [p.name for p in cache.iterdir() if p.name.startswith(".")]


def test_a_training_job_downloads_into_the_cache_once_and_says_so(
    hub: list[Path], tmp_path: Path, worker_env: Any, toy_data: Path
) -> None:
    spec = make_spec(Path(HUB_ID), toy_data, training={"max_steps": 1, "grad_accum": 1})
    first = run(spec, worker_env)
    assert first[-1]["type"] == "completed", first[-1]
    folder = worker_env.model_cache_dir / "tiny-org--tiny-chat"
    model = first[0]["data"]["model"]
    assert model["source"] == "hub" and model["folder"] == str(folder)
    # Downloaded elsewhere, then renamed into place with its marker.
    assert len(hub) == 1 and hub[0] != folder and hub[0].parent == folder.parent
    assert (folder / MARKER).is_file() and (folder / "config.json").is_file()
    assert _leftovers(worker_env.model_cache_dir) == []

    second = run(spec | {"job_id": "job-2"}, worker_env)
    assert second[-1]["type"] == "completed", second[-1]
    assert second[0]["data"]["model"]["source"] == "cache" and len(hub) == 1


def test_two_workers_downloading_at_once_leave_one_complete_copy(
    tiny_model: Path, hub: list[Path], worker_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.cache

    both_downloading = threading.Barrier(2, timeout=30)
    plain = trainer.cache.download_snapshot

    def slow(repo_id: str, revision: str | None, dest: Path, token: str | None) -> None:
        plain(repo_id, revision, dest, token)
        both_downloading.wait()  # neither has published when the other finishes

    monkeypatch.setattr(trainer.cache, "download_snapshot", slow)
    results: list[tuple[Path, str]] = []
    workers = [
        threading.Thread(
            target=lambda: results.append(
                resolve_model_path(ModelSpec(name_or_path=HUB_ID), worker_env)
            )
        )
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(results) == 2 and results[0][0] == results[1][0]
    folder = results[0][0]
    assert len(hub) == 2 and hub[0] != hub[1]  # each downloaded into its own temporary folder
    assert (folder / MARKER).is_file()
    for f in tiny_model.iterdir():
        if f.is_file():
            assert (folder / f.name).read_bytes() == f.read_bytes(), f.name
    assert _leftovers(worker_env.model_cache_dir) == []


def test_a_broken_off_download_in_the_cache_is_replaced(hub: list[Path], worker_env: Any) -> None:
    folder = worker_env.model_cache_dir / "tiny-org--tiny-chat"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # an earlier download that never finished
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"partial")
    path, source = resolve_model_path(ModelSpec(name_or_path=HUB_ID), worker_env)
    assert (path, source) == (folder, "hub")
    assert (folder / MARKER).is_file() and not (
        folder / "model-00001-of-00002.safetensors"
    ).exists()
    assert (folder / "config.json").read_text() != "{}"
    assert _leftovers(worker_env.model_cache_dir) == []


def _runpod_cached(hub_dir: Path, tiny_model: Path, commit: str = "0123abcd") -> Path:
    """Place the tiny model where RunPod's cached models are (hub cache layout)."""
    repo = hub_dir / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(tiny_model, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_runpods_cached_model_is_used_before_the_volume_cache_and_the_hub(
    hub: list[Path], tiny_model: Path, worker_env: Any, toy_data: Path
) -> None:
    snapshot = _runpod_cached(worker_env.cached_models_dir, tiny_model)
    spec = make_spec(Path(HUB_ID), toy_data, training={"max_steps": 1, "grad_accum": 1})
    events = run(spec, worker_env)
    assert events[-1]["type"] == "completed", events[-1]
    model = events[0]["data"]["model"]
    assert model["source"] == "runpod_cached" and model["folder"] == str(snapshot)
    assert hub == []  # nothing downloaded
    assert not (worker_env.model_cache_dir / "tiny-org--tiny-chat").exists()


def test_a_cached_model_at_another_revision_is_not_taken(
    hub: list[Path], tiny_model: Path, worker_env: Any
) -> None:
    snapshot = _runpod_cached(worker_env.cached_models_dir, tiny_model)
    at = ModelSpec(name_or_path=HUB_ID, revision="0123abcd")
    assert resolve_model_path(at, worker_env) == (snapshot, "runpod_cached")
    other = ModelSpec(name_or_path=HUB_ID, revision="v2")
    path, source = resolve_model_path(other, worker_env)
    assert source == "hub" and path != snapshot and len(hub) == 1
    shutil.rmtree(snapshot.parents[1])  # no cached model: the volume's copy serves
    assert resolve_model_path(other, worker_env)[1] == "cache"
