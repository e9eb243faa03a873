"""Taking a version elsewhere as files: the export folder, a zip, the Hugging Face Hub.

The files come from storage, else from the version's folder on the volume when it is
visible here. The Hub token is `settings.hf_token`, handed to the `HfApi` client only: it
is never written into a file, the database or a log.

Who may push where: the deployment's `HF_TOKEN` can usually write to more than one
namespace (its owner's, an organisation's), so a member pushes with it only into the
namespaces an admin allowed for them (`core.admin.set_hub_namespaces`); admins push
wherever the token can. A person who brings their own token (`token=`) pushes wherever that
token can write: the Hub itself decides. A refusal names the allowed namespaces.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import adapters
from core.clients.storage import make_blob_store
from core.db import repo, session_scope
from core.db.tables import AdapterVersion
from core.errors import BrightRunError, Forbidden, InvalidInput, NotFound
from core.export.card import loss_curve_svg, model_card, version_record
from core.settings import Settings
from core.users import Actor

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class ExportFailed(BrightRunError):
    """The Hugging Face Hub refused the upload or could not be reached."""


def _fetch_files(v: AdapterVersion, store: Any, dest: Path) -> None:
    if v.storage_prefix and store is not None:
        blobs = store.list(v.storage_bucket, v.storage_prefix)
        for b in blobs:
            store.download_to(
                v.storage_bucket, b.key, dest / b.key[len(v.storage_prefix) :].lstrip("/")
            )
        if blobs:
            return
    folder = Path(v.volume_path) if v.volume_path else None
    if folder is not None and folder.is_dir():
        for name in (*adapters.PEFT_FILES, "brightrun.json"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, dest / name)


def build_folder(
    actor: Actor, session: Any, store: Any, ref: str, dest: Path
) -> tuple[AdapterVersion, dict[str, Any]]:
    """Write the export of version `ref` into `dest` (see the module docstring)."""
    v = adapters.resolve(actor, session, ref)
    dest.mkdir(parents=True, exist_ok=True)
    _fetch_files(v, store, dest)
    missing = [f for f in adapters.PEFT_FILES if not (dest / f).is_file()]
    if missing:
        raise NotFound(
            f"the files of {ref!r} are neither in storage nor in a folder visible here (missing {missing})"
        )
    training_record = None
    if (dest / "brightrun.json").is_file():
        try:
            training_record = json.loads((dest / "brightrun.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            training_record = None
    record = version_record(actor, session, v, training_record)
    (dest / "brightrun.json").write_text(
        json.dumps(record, indent=1, default=str), encoding="utf-8"
    )
    (dest / "README.md").write_text(model_card(record), encoding="utf-8")
    if record["loss_curve"]:
        (dest / "loss_curve.svg").write_text(loss_curve_svg(record["loss_curve"]), encoding="utf-8")
    return v, record


def export_zip(actor: Actor, session: Any, store: Any, ref: str) -> tuple[str, bytes]:
    """(file name, zip bytes) of version `ref`."""
    with tempfile.TemporaryDirectory(prefix="brightrun-export-") as tmp:
        _, record = build_folder(actor, session, store, ref, Path(tmp))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(Path(tmp).iterdir()):
                zf.write(p, p.name)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", record["label"]).strip("-")
    return f"{slug}.zip", buf.getvalue()


# --------------------------------------------------------------------------- the hub


def allowed_namespaces(actor: Actor, session: Any) -> list[str]:
    """The Hub namespaces the actor may push to with the deployment's token."""
    user = repo.ensure_user(actor, session)
    return [n for n in (user.hub_namespaces or "").split(",") if n]


def check_namespace(actor: Actor, session: Any, repo_id: str) -> None:
    """Raise `Forbidden` unless the actor may push `repo_id` with the deployment's token."""
    if actor.is_admin:
        return
    namespace = repo_id.split("/", 1)[0]
    allowed = allowed_namespaces(actor, session)
    if namespace in allowed:
        return
    where = (
        f"you may push only to {', '.join(allowed)}"
        if allowed
        else "no namespace is allowed for you"
    )
    raise Forbidden(
        f"the deployment's Hugging Face token does not push to {namespace!r} for you: {where} "
        "(an admin sets them with `brightrun admin set-hub USER NAMESPACE...`). Or push with "
        "your own Hugging Face token"
    )


@dataclass(frozen=True)
class HubPush:
    repo_id: str
    url: str
    files: list[str]


def _upload(api: Any, repo_id: str, folder: str, label: str, private: bool) -> Any:
    """Create the repo if missing and commit the folder; the Hub's refusals as ExportFailed."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        created = api.create_repo(
            repo_id=repo_id, repo_type="model", private=private, exist_ok=True
        )
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            commit_message=f"{label} from BrightRun",
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "no answer"
        raise ExportFailed(
            f"the Hugging Face Hub refused the push to {repo_id} (HTTP {status}); check that "
            "the token has write access to that namespace"
        ) from None
    except OSError as e:
        raise ExportFailed(
            f"the Hugging Face Hub could not be reached: {type(e).__name__}"
        ) from None
    except ValueError as e:  # the Hub's check of the model card's metadata
        raise ExportFailed(f"the Hugging Face Hub refused the model card: {e}") from None
    return created


def push_to_hub(
    actor: Actor,
    settings: Settings,
    ref: str,
    repo_id: str,
    *,
    private: bool = True,
    store: Any = None,
    api_factory: Callable[[str], Any] | None = None,
    token: str | None = None,
) -> HubPush:
    """Upload version `ref` (PEFT files, brightrun.json, model card) to the Hub model repo
    `repo_id` (created if missing), with the person's own `token` if given, else the
    deployment's HF_TOKEN within the namespaces allowed to them (see the module doc).
    `api_factory(token)` builds the client (default: `huggingface_hub.HfApi(token=token)`)."""
    if not REPO_ID.match(repo_id or ""):
        raise InvalidInput(f"Hub repo {repo_id!r} must look like 'your-name/model-name'")
    own_token = bool(token)
    if not token:
        token = settings.hf_token.get_secret_value()
        if not token:
            raise InvalidInput(
                "HF_TOKEN is not set: add a Hugging Face token with write access to the "
                "settings, or push with your own token"
            )
    if api_factory is None:
        from huggingface_hub import HfApi

        def api_factory(t: str) -> Any:
            return HfApi(token=t)

    store = store or make_blob_store(settings)
    with tempfile.TemporaryDirectory(prefix="brightrun-hub-") as tmp, session_scope(settings) as s:
        adapters.resolve(actor, s, ref)  # another person's version is not found, first
        if not own_token:
            check_namespace(actor, s, repo_id)
        v, record = build_folder(actor, s, store, ref, Path(tmp))
        files = sorted(p.name for p in Path(tmp).iterdir())
        created = _upload(api_factory(token), repo_id, tmp, record["label"], private)
        repo.update_version(actor, s, v.id, hub_repo=repo_id)
    url = str(getattr(created, "url", "") or f"https://huggingface.co/{repo_id}")
    return HubPush(repo_id=repo_id, url=url, files=files)
