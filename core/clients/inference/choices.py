"""What a user may chat with: the served bases, then the actor's own ready adapter versions
and checkpoints on their base's endpoint, and those no endpoint serves, with the reason
(see `core.clients.inference`).

Folders are the deployment's business (docs/security.md): a base served from a folder
(vLLM serves `--model /volume/models/x` under that path) reaches an admin as that path and
a member as the folder's name only (`shown_model`), in its label, its `name` and the
reasons an adapter is not served. `served_name` (the `model` of a request) and `path` stay
the server's, for the requests; what a page or command prints is `label` and `name`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from core.clients.inference.client import InferenceClient, local_adapters_dir, same_base
from core.clients.inference.routing import InferenceRouter
from core.clients.inference.types import InferenceError, InferenceUnavailable, ServedModel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.settings import Settings
    from core.users import Actor


@dataclass(frozen=True)
class ModelChoice:
    """Something the actor can chat with: a served base, or one of their adapters."""

    label: str  # what the user reads: "support-bot v2", "support-bot step 400"
    served_name: str  # the `model` of a request
    path: str | None = None  # the adapter folder as the server sees it; None: the base
    trained_on: str | None = None  # the base model the adapter was trained on
    endpoint: str | None = None  # the inference endpoint that serves it
    shown_name: str = ""  # the model's name as the actor may read it ("": `served_name`)

    @property
    def is_adapter(self) -> bool:
        return self.path is not None

    @property
    def name(self) -> str:
        """The model's name to print or export (a member never reads a folder path)."""
        return self.shown_name or self.served_name


def shown_model(model: str, actor: Actor) -> str:
    """A model as `actor` may read it: an admin as the server names it, a member without
    the folder when it is served from one (`/volume/models/Qwen3-4B` -> `Qwen3-4B`). Hub
    ids (`org/name`) are not folders and are kept."""
    folder = model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model
    if actor.is_admin or not folder:
        return model
    return PurePosixPath(model.replace("\\", "/").rstrip("/")).name or model


@dataclass(frozen=True)
class Unserved:
    """An adapter of the actor's that no endpoint can serve, and why."""

    label: str
    reason: str


@dataclass(frozen=True)
class ChoiceSet:
    available: list[ModelChoice]
    unserved: list[Unserved]


def model_choices(
    actor: Actor,
    session: Session | None,
    settings: Settings,
    client: InferenceClient | InferenceRouter,
) -> list[ModelChoice]:
    """What the actor can chat with (`model_choice_set(...).available`)."""
    return model_choice_set(actor, session, settings, client).available


def _served_bases(
    router: InferenceRouter,
) -> tuple[dict[str, str], list[ServedModel], dict[str, str]]:
    """Base name -> endpoint, the adapters each endpoint lists, and the endpoints that do
    not answer (the default endpoint's failure is raised)."""
    bases: dict[str, str] = {}
    listed: list[tuple[str, ServedModel]] = []
    down: dict[str, str] = {}
    for url in router.endpoints():
        try:
            models = router.client(url).models()
        except InferenceError as e:
            if url == router.url:
                raise
            down[url] = str(e)
            continue
        for m in models:
            if m.is_adapter:
                listed.append((url, m))
            else:
                bases.setdefault(m.id, url)
    return bases, listed, down


def model_choice_set(
    actor: Actor,
    session: Session | None,
    settings: Settings,
    client: InferenceClient | InferenceRouter,
) -> ChoiceSet:
    """The served bases first (the default endpoint's first), then the actor's ready adapter
    versions and checkpoints that have a folder on the shared volume (`volume_path`), each
    on the endpoint serving the base it was trained on (INFERENCE_URLS, see `routing`);
    those whose base no endpoint serves are `unserved`, with the reason. A version is
    served under its folder's name (the filesystem resolver's rule); a checkpoint, whose
    folder name is not unique, under `ckpt-<version id>` (resolver mode: copied into the
    resolver folder under that name when visible from here). With
    AUTH=none (one local user) the adapters the servers already list, and folders in the
    local adapter folder, are added. `session` None (no database yet) lists no versions.
    Routes every choice on `client` when it is a router. Raises InferenceError."""
    router = (
        client if isinstance(client, InferenceRouter) else InferenceRouter(settings, default=client)
    )
    bases, listed, down = _served_bases(router)
    if not bases:
        raise InferenceUnavailable(f"the inference server at {router.url} lists no base model")
    out = [
        ModelChoice(
            f"{shown_model(b, actor)} (base)", b, endpoint=url, shown_name=shown_model(b, actor)
        )
        for b, url in bases.items()
    ]
    unserved: list[Unserved] = []

    def add(label: str, served: str, folder: str, trained_on: str | None) -> None:
        url = _endpoint_of(trained_on, bases)
        if url is None:
            why = _why_unserved(settings, actor, trained_on or "", bases, down)
            unserved.append(Unserved(label, why))
        else:
            out.append(ModelChoice(label, served, folder, trained_on, url))

    if session is not None:
        _add_versions(actor, session, add)
    if settings.auth == "none":
        _add_unrecorded(settings, router, listed, out, unserved, add)
    for c in out:
        router.route(c.served_name, c.endpoint or router.url)
    return ChoiceSet(out, unserved)


def _add_versions(actor: Actor, session: Session, add: Any) -> None:
    """The actor's ready versions and checkpoints with a folder on the volume."""
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
            # what the server checks: the folder's record when visible here (a job on
            # the demo model records its folder, the version its catalog id)
            add(label, served, folder, _recorded_base(Path(folder)) or v.base_model)


def _add_unrecorded(
    settings: Settings, router: Any, listed: Any, out: list[Any], unserved: list[Any], add: Any
) -> None:
    """One local user: adapters the servers already list, and the local adapter folder's."""
    known = {c.served_name for c in out} | {u.label for u in unserved}
    for url, m in listed:
        if m.id not in known:
            path = m.root or router.client(url).adapter_path(m.id)
            out.append(ModelChoice(m.id, m.id, path, m.parent, url))
            known.add(m.id)
    folder = local_adapters_dir(settings)
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        if d.name not in known and (d / "adapter_config.json").is_file():
            add(d.name, d.name, str(d), _recorded_base(d))


def _endpoint_of(trained_on: str | None, bases: dict[str, str]) -> str | None:
    """The endpoint serving the base an adapter was trained on (the default endpoint when
    the base is not recorded); None when no endpoint serves it."""
    if not trained_on:
        return next(iter(bases.values()))
    return next((url for b, url in bases.items() if same_base(trained_on, b)), None)


def _why_unserved(
    settings: Settings, actor: Actor, trained_on: str, bases: dict[str, str], down: dict[str, str]
) -> str:
    url = settings.inference_urls.get(trained_on, "").rstrip("/")
    base = shown_model(trained_on, actor)
    served = [shown_model(b, actor) for b, u in bases.items() if u == url or not url]
    if url in down:
        return f"trained on {base}, whose endpoint {url} is not answering ({down[url]})"
    if url:
        return f"trained on {base}, but its endpoint {url} serves {', '.join(served) or 'no base'}"
    return (
        f"trained on {base}, which no inference endpoint serves (served: "
        f"{', '.join(served)}): add its endpoint to INFERENCE_URLS"
    )


def _recorded_base(folder: Path) -> str | None:
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    return str(base) if base else None


def database_ready(settings: Settings) -> bool:
    """Whether the database has been set up (`brightrun db upgrade`, `brightrun up`)."""
    from sqlalchemy.engine import make_url

    from core.db import current_revision

    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return False
    return current_revision(settings) is not None


def actor_choice_set(
    actor: Actor, settings: Settings, client: InferenceClient | InferenceRouter
) -> ChoiceSet:
    """`model_choice_set` in its own database session; before the database has been set up
    no versions are listed."""
    from core.db import session_scope

    if not database_ready(settings):
        return model_choice_set(actor, None, settings, client)
    with session_scope(settings) as session:
        return model_choice_set(actor, session, settings, client)


def actor_choices(
    actor: Actor, settings: Settings, client: InferenceClient | InferenceRouter
) -> list[ModelChoice]:
    """What the actor can chat with (`actor_choice_set(...).available`)."""
    return actor_choice_set(actor, settings, client).available


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
