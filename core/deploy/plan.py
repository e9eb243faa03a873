"""The diff between what the account holds and what `DeployConfig` asks for, as the
REST v2 calls that close it (`make_plan`). Pure: no network.

Resources are found by name (an endpoint RunPod renamed to `<name> -fb` for FlashBoot
counts too); two of the same name are refused. What wins when the account and the
options disagree: the options, except that a volume is never shrunk (RunPod cannot), nor
moved to another data centre or storage tier (refused, with the reason). Updates are
PATCHes of the fields that differ; an endpoint carries its own copy of its template's
container (RunPod applies a template once, at create), so a new image or env is sent to
both. Raises `DeployError` naming the resource and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.deploy.config import DeployConfig, EndpointSpec, TemplateSpec, VolumeSpec, desired_state
from core.deploy.errors import DeployError


@dataclass(frozen=True)
class Ref:
    """The id of a resource this plan creates; known only once the call is made."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"<id of {self.kind} {self.name}>"


@dataclass(frozen=True)
class ApiCall:
    """One request to RunPod's REST API v2: `path` is under the base URL, `body` JSON
    that may hold `Ref`s (resolved when the call is made)."""

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str
    body: Any = None
    produces: Ref | None = None


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any


@dataclass
class Step:
    kind: Literal["volume", "template", "endpoint"]
    name: str
    action: Literal["create", "update", "unchanged"]
    resource_id: str | None = None
    changes: list[Change] = field(default_factory=list)
    calls: list[ApiCall] = field(default_factory=list)
    note: str = ""
    observed: dict[str, Any] | None = None  # the resource as the account showed it

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.name)


@dataclass
class Observed:
    """The account as the three list calls return it (v2 shapes, unwrapped)."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DeployPlan:
    """Every call deploy makes, in order, against what the account holds now."""

    steps: list[Step]
    reads: list[ApiCall]
    env_keys: dict[str, str]  # .env key -> endpoint name
    env_extra: dict[str, str]  # plain settings written with the URLs
    observed: bool  # False: planned without reading the account (no key)
    base_endpoints: dict[str, str] = field(default_factory=dict)  # model -> endpoint name
    count_endpoints: dict[str, str] = field(default_factory=dict)  # GPU count -> endpoint

    @property
    def has_changes(self) -> bool:
        return any(s.action != "unchanged" for s in self.steps)

    def endpoint_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "endpoint"]


READS = (
    ApiCall("GET", "/network-volumes"),
    ApiCall("GET", "/templates"),
    ApiCall("GET", "/serverless"),
)


def make_plan(config: DeployConfig, observed: Observed | None) -> DeployPlan:
    """The calls that bring the account to `config`. `observed=None`: as if it were empty."""
    desired = desired_state(config)
    state = observed or Observed()
    vol = plan_volume(desired.volume, state)
    steps = [vol]
    volume_id: Any = vol.resource_id or vol.ref
    for tspec, espec in desired.services:
        tstep = plan_template(tspec, state)
        template_id: Any = tstep.resource_id or tstep.ref
        steps += [tstep, plan_endpoint(espec, tspec, template_id, volume_id, state)]
    return DeployPlan(
        steps,
        list(READS),
        desired.env_keys,
        desired.env_extra,
        observed is not None,
        desired.base_endpoints,
        desired.count_endpoints,
    )


def _by_name(items: list[dict[str, Any]], name: str, what: str, *aliases: str) -> dict | None:
    names = {name, *aliases}
    found = [i for i in items if i.get("name") in names]
    if len(found) > 1:
        ids = ", ".join(str(i.get("id")) for i in found)
        raise DeployError(
            f"{len(found)} {what}s are named {name!r} ({ids}); deploy finds resources by name, "
            f"so rename or delete all but one in the RunPod console, or use another --prefix"
        )
    return found[0] if found else None


def _diff(have: dict[str, Any], wanted: dict[str, Any]) -> list[Change]:
    """Fields whose value differs; a field that waits for a new id always does."""
    return [
        Change(k, have.get(k), v)
        for k, v in wanted.items()
        if isinstance(v, Ref) or _has_ref(v) or have.get(k) != v
    ]


def _has_ref(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, Ref) for v in value)


# --------------------------------------------------------------------------- volume


def plan_volume(spec: VolumeSpec, observed: Observed) -> Step:
    have = _by_name(observed.volumes, spec.name, "network volume")
    if have is None:
        body: dict[str, Any] = {
            "name": spec.name,
            "size": spec.size_gb,
            "dataCenter": spec.data_center,
        }
        if spec.type:
            body["type"] = spec.type
        call = ApiCall("POST", "/network-volumes", body, produces=Ref("volume", spec.name))
        return Step("volume", spec.name, "create", calls=[call])
    vid = str(have["id"])
    _check_volume_place(spec, have, vid)
    size = int(have.get("size") or 0)
    if size < spec.size_gb:
        call = ApiCall("PATCH", f"/network-volumes/{vid}", {"size": spec.size_gb})
        change = Change("size", size, spec.size_gb)
        return Step("volume", spec.name, "update", vid, [change], [call], observed=have)
    note = (
        f"already {size} GB, more than the {spec.size_gb} GB asked; volumes cannot shrink"
        if size > spec.size_gb
        else ""
    )
    return Step("volume", spec.name, "unchanged", vid, note=note, observed=have)


def _check_volume_place(spec: VolumeSpec, have: dict[str, Any], vid: str) -> None:
    where = have.get("dataCenter")
    if where != spec.data_center:
        raise DeployError(
            f"network volume {spec.name!r} ({vid}) is in data centre {where}, "
            f"not {spec.data_center}; a volume cannot move. Deploy with "
            f"--data-center {where}, or another --prefix for a new volume"
        )
    if spec.type and have.get("type") != spec.type:
        raise DeployError(
            f"network volume {spec.name!r} ({vid}) is {have.get('type')}, not {spec.type}; a "
            f"volume's storage tier is set when it is created. Deploy with --volume-type "
            f"{have.get('type')}, or another --prefix for a new volume"
        )


# --------------------------------------------------------------------------- template


def _container(spec: TemplateSpec) -> dict[str, Any]:
    """The container fields a template and its endpoint share, as RunPod shows them."""
    return {
        "image": spec.image,
        "disk": spec.container_disk_gb,
        "env": dict(spec.env),
        "registry": spec.registry_auth_id or None,
    }


def _have_container(have: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": have.get("image"),
        "disk": have.get("disk"),
        "env": have.get("env") or {},
        "registry": have.get("registry") or None,
    }


def plan_template(spec: TemplateSpec, observed: Observed) -> Step:
    have = _by_name(observed.templates, spec.name, "template")
    if have is None:
        body = {"name": spec.name, **_container(spec), "serverless": True}
        if body["registry"] is None:
            del body["registry"]
        # A worker needs neither; both default to on for templates made in the console.
        body.update(startSsh=False, startJupyter=False)
        call = ApiCall("POST", "/templates", body, produces=Ref("template", spec.name))
        return Step("template", spec.name, "create", calls=[call])
    tid = str(have["id"])
    if not have.get("serverless"):
        raise DeployError(
            f"template {spec.name!r} ({tid}) is a Pod template; template names are unique in a "
            "RunPod account, so rename it or deploy with another --prefix"
        )
    changes = _diff(_have_container(have), _container(spec))
    if not changes:
        return Step("template", spec.name, "unchanged", tid, observed=have)
    call = ApiCall("PATCH", f"/templates/{tid}", {c.field: c.new for c in changes})
    return Step("template", spec.name, "update", tid, changes, [call], observed=have)


# --------------------------------------------------------------------------- endpoint


def _endpoint_settings(spec: EndpointSpec, volume_id: Any) -> dict[str, Any]:
    """The endpoint's own settings (not its container), flattened to `group.field`."""
    return {
        "gpu.pools": list(spec.pools),
        "gpu.count": spec.gpu_count,
        "gpu.minCudaVersion": spec.min_cuda or None,
        "gpu.allowedCudaVersions": [],  # the floor above says it; a set beside it is refused
        "gpu.excludedTypes": [],
        "workers.min": spec.workers_min,
        "workers.max": spec.workers_max,
        "workers.idleTimeout": spec.idle_timeout_s,
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": spec.queue_delay_s},
        "flashboot": "FLASHBOOT" if spec.flashboot else "OFF",
        "timeout": spec.execution_timeout_ms,
        "networkVolumes": [volume_id],
        "dataCenterIds": [spec.data_center],
    }


def _have_settings(have: dict[str, Any]) -> dict[str, Any]:
    gpu, workers = have.get("gpu") or {}, have.get("workers") or {}
    return {
        "gpu.pools": gpu.get("pools"),
        "gpu.count": gpu.get("count", 1),
        "gpu.minCudaVersion": gpu.get("minCudaVersion") or None,
        "gpu.allowedCudaVersions": gpu.get("allowedCudaVersions") or [],
        "gpu.excludedTypes": gpu.get("excludedTypes") or [],
        "workers.min": workers.get("min"),
        "workers.max": workers.get("max"),
        "workers.idleTimeout": workers.get("idleTimeout"),
        "scaling": have.get("scaling"),
        "flashboot": have.get("flashboot"),
        "timeout": have.get("timeout"),
        "networkVolumes": have.get("networkVolumes") or [],
        "dataCenterIds": have.get("dataCenterIds") or [],
    }


def create_endpoint_body(spec: EndpointSpec, template_id: Any, volume_id: Any) -> dict[str, Any]:
    """`POST /serverless`: a queue endpoint on the template, the volume attached."""
    gpu: dict[str, Any] = {"pools": list(spec.pools), "count": spec.gpu_count}
    if spec.min_cuda:
        gpu["minCudaVersion"] = spec.min_cuda
    return {
        "name": spec.name,
        "type": "QUEUE",
        "templateId": template_id,
        "gpu": gpu,
        "workers": {
            "min": spec.workers_min,
            "max": spec.workers_max,
            "idleTimeout": spec.idle_timeout_s,
        },
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": spec.queue_delay_s},
        "flashboot": "FLASHBOOT" if spec.flashboot else "OFF",
        "timeout": spec.execution_timeout_ms,
        "networkVolumes": [volume_id],
        "dataCenterIds": [spec.data_center],
    }


def update_endpoint_body(changes: list[Change], wanted: dict[str, Any]) -> dict[str, Any]:
    """`PATCH /serverless/{id}`: the groups that changed. `workers` goes whole; `gpu` only
    the fields that changed, except that dropping excluded GPU types means resending the
    pools (RunPod clears the exclusions with them); "" clears the CUDA floor."""
    body: dict[str, Any] = {}
    for c in changes:
        group, _, sub = c.field.partition(".")
        if group == "workers":
            body["workers"] = {k: wanted[f"workers.{k}"] for k in ("min", "max", "idleTimeout")}
        elif group == "gpu":
            key, value = ("pools", wanted["gpu.pools"]) if sub == "excludedTypes" else (sub, c.new)
            body.setdefault("gpu", {})[key] = "" if value is None else value
        else:
            body[c.field] = c.new
    return body


def plan_endpoint(
    spec: EndpointSpec,
    tspec: TemplateSpec,
    template_id: Any,
    volume_id: Any,
    observed: Observed,
) -> Step:
    have = _by_name(observed.endpoints, spec.name, "endpoint", f"{spec.name} -fb")
    if have is None:
        body = create_endpoint_body(spec, template_id, volume_id)
        call = ApiCall("POST", "/serverless", body, produces=Ref("endpoint", spec.name))
        return Step("endpoint", spec.name, "create", calls=[call])
    eid = str(have["id"])
    if have.get("type", "QUEUE") != "QUEUE" or not have.get("gpu"):
        raise DeployError(
            f"endpoint {spec.name!r} ({eid}) is not a queue-based GPU endpoint, and RunPod "
            "cannot change that; rename or delete it in the console, or use another --prefix"
        )
    wanted = {**_endpoint_settings(spec, volume_id), **_container(tspec)}
    changes = _diff({**_have_settings(have), **_have_container(have)}, wanted)
    if not changes:
        return Step("endpoint", spec.name, "unchanged", eid, observed=have)
    call = ApiCall("PATCH", f"/serverless/{eid}", update_endpoint_body(changes, wanted))
    return Step("endpoint", spec.name, "update", eid, changes, [call], observed=have)
