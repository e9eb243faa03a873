"""Checks of hostile or wrong input that several parts of core share.

Each check returns the cleaned value or raises `InvalidInput` (a subclass below) whose
message names the field and says what to do. None of them touches stored data, so a
refused request changes nothing.

- `check_upload_filename(name)`: the name an uploaded file arrived with. It is kept for
  display only (storage keys are built from ids, see `core.clients.storage`), but it is still
  refused when it holds a path (`/`, `\\`, a `..` part), control or bidirectional-override
  characters (they make a name read differently from what it is), or more than 255
  characters. Letters of any script are fine; the name is NFC-normalised.
- `check_base_model(settings, model)`: what a job may name as its base model, in this
  order: a catalog id or the tiny demo model's id; a model folder inside the allowed model
  folders (`allowed_model_dirs`: `<data_dir>/models` and `MODEL_DIRS`); a hub id whose
  `config.json` is in this machine's Hugging Face cache. Refused: a URL, a path outside
  the allowed folders (symbolic links are followed before the check), a folder there
  without `config.json`, and a hub id BrightRun does not know (the dashboard never
  downloads to find out). A path under a `MODEL_DIRS` folder that this machine cannot see
  (the RunPod network volume) is accepted as given: the worker resolves it. Returns the
  planner's facts about the model when they can be read, else None.
- `check_max_length(facts, max_length, model)`: a training max length within the model's
  context.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InvalidInput
from core.settings import Settings

if TYPE_CHECKING:
    from core.planner import ModelFacts

MAX_FILENAME_CHARS = 255
MAX_MODEL_CHARS = 300
# Bidirectional overrides and isolates, and the invisible marks that steer them.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_HUB_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_URL_SCHEMES = ("http:", "https:", "file:", "ftp:", "s3:", "gs:", "hf:", "ssh:", "git:")


class BadFileName(InvalidInput):
    """An uploaded file's name that BrightRun will not keep."""


class ModelRefused(InvalidInput):
    """A base model a job may not use: a URL, a path outside the allowed folders, or an
    unknown hub id."""


def _unsafe_chars(text: str) -> list[str]:
    return [
        f"U+{ord(c):04X}"
        for c in text
        if unicodedata.category(c) == "Cc" or c in _BIDI or c in "\u2028\u2029"
    ]


def check_upload_filename(name: str) -> str:
    """The display name of an uploaded file, or `BadFileName` saying what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise BadFileName("file name: the upload has no file name")
    bad = _unsafe_chars(name)
    if bad:
        raise BadFileName(
            f"file name: it contains control or text-direction characters ({', '.join(bad[:5])}); "
            "rename the file"
        )
    name = unicodedata.normalize("NFC", name.strip())
    if "/" in name or "\\" in name or name in (".", ".."):
        raise BadFileName(
            f"file name {name[:80]!r} is a path; upload the file itself under a plain name"
        )
    if len(name) > MAX_FILENAME_CHARS:
        raise BadFileName(
            f"file name is {len(name)} characters long; at most {MAX_FILENAME_CHARS}, rename the file"
        )
    return name


# --------------------------------------------------------------------------- models


def allowed_model_dirs(settings: Settings) -> list[Path]:
    """Where a base model given as a path may live: `<data_dir>/models`, then MODEL_DIRS."""
    dirs = [settings.data_dir / "models", *settings.model_dirs]
    return [Path(os.path.abspath(Path(d).expanduser())) for d in dirs]


def _inside(path: Path, folders: list[Path]) -> Path | None:
    return next((d for d in folders if path == d or path.is_relative_to(d)), None)


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", "~", "."))
        or "\\" in model
        or model.count("/") > 1
        or Path(model).expanduser().exists()
    )


def check_base_model(settings: Settings, model: str) -> ModelFacts | None:
    """Refuse a base model a job may not use (see the module doc); the planner's facts
    about an accepted one, or None when this machine cannot read them."""
    from core import planner

    if not isinstance(model, str) or not model.strip():
        raise ModelRefused("base model: give a catalog model id, a hub id or a model folder")
    m = model.strip()
    if len(m) > MAX_MODEL_CHARS:
        raise ModelRefused(f"base model is {len(m)} characters long; at most {MAX_MODEL_CHARS}")
    if _unsafe_chars(m):
        raise ModelRefused("base model contains control or text-direction characters")
    if "://" in m or m.lower().startswith(_URL_SCHEMES):
        raise ModelRefused(
            "base model must be a catalog model id, a hub id such as 'Qwen/Qwen2.5-7B-Instruct' "
            "or a model folder, not a URL"
        )
    models_dir = settings.data_dir / "models"
    if m.lower() == planner.TINY_ID:
        built = (models_dir / planner.TINY_DIR_NAME / "config.json").is_file()
        return planner.describe(m, local_models_dir=models_dir) if built else None
    if m.lower() in {i.lower() for i in planner.CATALOG}:
        return planner.describe(m)
    if _looks_like_path(m):
        return _check_model_folder(settings, m)
    if not _HUB_ID.match(m) or ".." in m or "--" in m:
        raise ModelRefused(
            f"base model {m!r} is neither a hub id like 'Qwen/Qwen2.5-7B-Instruct' nor a model folder"
        )
    try:
        return planner.describe(m)
    except planner.ModelNotDescribable:
        raise ModelRefused(
            f"unknown base model {m!r}: it is not in BrightRun's catalog and not in this "
            "machine's Hugging Face cache. Pick a catalog model, or put the model's folder under "
            f"{', '.join(str(d) for d in allowed_model_dirs(settings))} (MODEL_DIRS adds folders)"
        ) from None


def _check_model_folder(settings: Settings, model: str) -> ModelFacts | None:
    from core import planner

    folders = allowed_model_dirs(settings)
    where = ", ".join(str(d) for d in folders)
    given = Path(model).expanduser()
    if ".." in given.parts:
        raise ModelRefused(f"base model folder {model!r} uses '..'; give the folder's full path")
    lexical = Path(os.path.abspath(given))
    if _inside(lexical, folders) is None:
        raise ModelRefused(
            f"base model folder {model!r} is outside the allowed model folders ({where}); "
            "move the model there or add its folder to MODEL_DIRS"
        )
    if not lexical.exists():
        local = _inside(lexical, folders[:1])
        if local is not None:  # <data_dir>/models is on this machine: the folder must be there
            raise ModelRefused(f"base model folder {model!r} does not exist")
        return None  # a worker-side folder (e.g. on the RunPod volume): the worker checks it
    real = lexical.resolve()
    if _inside(real, [d.resolve() for d in folders]) is None:
        raise ModelRefused(
            f"base model folder {model!r} links to {real}, outside the allowed model folders ({where})"
        )
    if not (real / "config.json").is_file():
        raise ModelRefused(
            f"base model folder {model!r} has no config.json (a folder as save_pretrained writes it is needed)"
        )
    return planner.describe(str(real))


def check_max_length(facts: ModelFacts | None, max_length: int, model: str) -> None:
    """Refuse a training max length beyond the model's context (when it is known)."""
    if facts is not None and facts.context_length and max_length > facts.context_length:
        raise InvalidInput(
            f"max_length: {max_length} tokens is beyond {model}'s context of "
            f"{facts.context_length} tokens; use {facts.context_length} or less"
        )


# --------------------------------------------------------------------------- adapters

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_adapter_name(name: str) -> str:
    """An adapter name: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not isinstance(name, str) or not _ADAPTER_NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"adapter name {str(name)[:80]!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def served_adapter_name(adapter_name: str, job_id: str) -> str:
    """The folder a job's adapter gets on the shared volume, which is also the name the
    inference server serves it under: `<adapter name>-<job suffix>`. Unique per job, so
    two users' adapters of the same name (or two versions of one) never overwrite each
    other, and nobody chats with another user's weights by naming a folder."""
    check_adapter_name(adapter_name)
    return f"{adapter_name[:100]}-{job_id.removeprefix('job-')}"
