"""Facts for a model named by a user: `describe(model, local_models_dir=None)` -> `ModelFacts`.

`model` is, in this order: a catalog id (`Qwen/Qwen2.5-7B-Instruct`; case-insensitive), the
tiny demo model's id (`brightrun/tiny-chat`, described from
`<local_models_dir>/tiny-chat/config.json`, the folder `trainer.shared.tiny.build_tiny_chat_model`
writes), a folder holding a `config.json`, a `config.json` file, or a hub id whose
`config.json` is already in the local Hugging Face cache (no network). Anything else raises
`ModelNotDescribable`, whose message says why the planner cannot estimate it.

Supported architectures (model_type): qwen2, qwen3, qwen3_moe, qwen3_next, llama, mistral
and Qwen's first-generation `qwen` (remote code; for the published Qwen-72B anchor).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.planner.catalog import CATALOG, TINY_DIR_NAME, TINY_ENTRY, TINY_ID, CatalogEntry
from core.planner.facts import ModelFacts, ModelNotDescribable
from core.planner.from_config import facts_from_config


def _from_entry(e: CatalogEntry) -> ModelFacts:
    return facts_from_config(
        e.config,
        id=e.id,
        hub_id=e.id,
        name=e.name,
        family=e.family,
        licence=e.licence,
        chat_template=e.chat_template,
        card_size=e.card_size,
        source=e.source,
    )


def _read_config(path: Path, what: str) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ModelNotDescribable(f"cannot estimate {what}: {path} cannot be read ({e})") from e
    except json.JSONDecodeError as e:
        raise ModelNotDescribable(f"cannot estimate {what}: {path} is not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ModelNotDescribable(f"cannot estimate {what}: {path} is not a JSON object")
    return cfg


def describe(model: str, *, local_models_dir: Path | str | None = None) -> ModelFacts:
    """Facts for a catalog id, the tiny demo model, a local folder/config, or a cached hub id."""
    wanted = model.strip()
    for entry in CATALOG.values():
        if entry.id.lower() == wanted.lower():
            return _from_entry(entry)
    if wanted.lower() == TINY_ID:
        if local_models_dir is None:
            raise ModelNotDescribable(
                f"cannot estimate {TINY_ID}: it is built on this machine and the planner "
                "was not told where local models live"
            )
        folder = Path(local_models_dir) / TINY_DIR_NAME
        if not (folder / "config.json").is_file():
            raise ModelNotDescribable(
                f"cannot estimate {TINY_ID}: it has not been built yet ({folder} has no "
                f"config.json); build it with `python -m trainer.shared.tiny {folder}`"
            )
        cfg = _read_config(folder / "config.json", TINY_ID)
        return facts_from_config(
            cfg,
            id=TINY_ID,
            source=str(folder / "config.json"),
            **{k: v for k, v in TINY_ENTRY.items() if k != "id"},
        )
    path = Path(wanted).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotDescribable(
                f"cannot estimate {wanted}: the folder has no config.json (a model folder "
                "as save_pretrained writes it is needed)"
            )
        path = path / "config.json"
    if path.is_file():
        cfg = _read_config(path, wanted)
        return facts_from_config(cfg, id=wanted, source=str(path))
    cached = _cached_hub_config(wanted)
    if cached is not None:
        cfg = _read_config(cached, wanted)
        return facts_from_config(cfg, id=wanted, hub_id=wanted, source=f"{cached} (hub cache)")
    raise ModelNotDescribable(
        f"cannot estimate {wanted}: it is not in BrightRun's catalog, not a local folder with "
        "a config.json, and its config.json is not in the local Hugging Face cache (the "
        "planner does not download); pick a catalog model or give a model folder"
    )


def _cached_hub_config(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".")):
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError:
        return None
    return Path(hit) if isinstance(hit, str) else None


def catalog_models(local_models_dir: Path | str | None = None) -> list[ModelFacts]:
    """Facts for every catalog model (and the tiny demo model once it is built)."""
    out = [_from_entry(e) for e in CATALOG.values()]
    if local_models_dir is not None and (Path(local_models_dir) / TINY_DIR_NAME).is_dir():
        out.append(describe(TINY_ID, local_models_dir=local_models_dir))
    return out
