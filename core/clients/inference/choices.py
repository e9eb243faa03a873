"""What a user may chat with: the served base, then the actor's own ready adapter versions
and checkpoints (see `core.clients.inference`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.clients.inference.client import InferenceClient, local_adapters_dir
from core.clients.inference.types import InferenceUnavailable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.settings import Settings
    from core.users import Actor


@dataclass(frozen=True)
class ModelChoice:
    """Something the actor can chat with: the served base, or one of their adapters."""

    label: str  # what the user reads: "support-bot v2", "support-bot step 400"
    served_name: str  # the `model` of a request
    path: str | None = None  # the adapter folder as the server sees it; None: the base
    trained_on: str | None = None  # the base model the adapter was trained on

    @property
    def is_adapter(self) -> bool:
        return self.path is not None


def model_choices(
    actor: Actor, session: Session | None, settings: Settings, client: InferenceClient
) -> list[ModelChoice]:
    """The served base first, then the actor's ready adapter versions and checkpoints that
    have a folder on the shared volume (`volume_path`). A version is served under its
    folder's name (the filesystem resolver's rule); a checkpoint, whose folder name is not
    unique, under `ckpt-<version id>`, by runtime loading only. With AUTH=none (one local user) the
    adapters the server already lists, and folders in the local adapter folder, are added.
    `session` None (no database yet) lists no versions. Raises InferenceError."""
    models = client.models()
    base = next((m.id for m in models if not m.is_adapter), None)
    if base is None:
        raise InferenceUnavailable(f"the inference server at {client.url} lists no base model")
    out = [ModelChoice(f"{base} (base)", base)]
    if session is not None:
        from core.db import repo

        for adapter in repo.list_adapters(actor, session):
            for v in repo.list_versions(actor, session, adapter.id):
                if v.status != "ready" or not v.volume_path:
                    continue
                folder = v.volume_path.rstrip("/")
                served = f"ckpt-{v.id}" if v.is_checkpoint else Path(folder).name
                label = f"{adapter.name} v{v.version}" if v.version is not None else adapter.name
                if v.is_checkpoint:
                    label += f" step {v.step}"
                out.append(ModelChoice(label, served, folder, v.base_model))
    if settings.auth == "none":
        known = {c.served_name for c in out}
        extra = {m.id: m.root or client.adapter_path(m.id) for m in models if m.is_adapter}
        folder = local_adapters_dir(settings)
        if folder.is_dir():
            for d in sorted(folder.iterdir()):
                if (d / "adapter_config.json").is_file():
                    extra.setdefault(d.name, str(d))
        out += [ModelChoice(n, n, p) for n, p in sorted(extra.items()) if n not in known]
    return out


def database_ready(settings: Settings) -> bool:
    """Whether the database has been set up (`brightrun db upgrade`, `brightrun up`)."""
    from sqlalchemy.engine import make_url

    from core.db import current_revision

    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return False
    return current_revision(settings) is not None


def actor_choices(actor: Actor, settings: Settings, client: InferenceClient) -> list[ModelChoice]:
    """`model_choices` in its own database session; before the database has been set up
    no versions are listed."""
    from core.db import session_scope

    if not database_ready(settings):
        return model_choices(actor, None, settings, client)
    with session_scope(settings) as session:
        return model_choices(actor, session, settings, client)


def find_choice(
    choices: Sequence[ModelChoice], name: str, version: int | None = None
) -> ModelChoice:
    """The choice for an adapter name: its served name, its label ("support-bot v2"), or
    the adapter's name (its newest version, or `version`). Raises NotFound."""
    from core.errors import NotFound

    for c in choices:
        if name in (c.served_name, c.label) and version is None:
            return c
    prefix = f"{name} v"
    numbered = [
        (int(c.label[len(prefix) :]), c)
        for c in choices
        if c.label.startswith(prefix) and c.label[len(prefix) :].isdigit()
    ]
    if version is not None:
        numbered = [(n, c) for n, c in numbered if n == version]
    if numbered:
        return max(numbered, key=lambda nc: nc[0])[1]
    which = f"{name!r} version {version}" if version is not None else repr(name)
    raise NotFound(f"no adapter {which} to chat with: `brightrun chat --list` shows them")
