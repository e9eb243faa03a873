"""Carrying out a `DeployPlan`: its calls in order, each endpoint read back and its
`/health` checked, then the endpoints' job URLs (from their `requestUrls`) written into
`.env`. A failure stops at once, before `.env` is touched; what was done so far is
reported and a second run continues from there (deploy finds resources by name).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.deploy.client import RunPodApi
from core.deploy.envfile import read_env_value, update_env_file
from core.deploy.errors import DeployError
from core.deploy.plan import DeployPlan, Ref, Step


@dataclass
class DeployResult:
    plan: DeployPlan
    ids: dict[Ref, str] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> as RunPod has it
    endpoint_urls: dict[str, str] = field(default_factory=dict)  # .env key -> value
    health: dict[str, dict] = field(default_factory=dict)  # endpoint name -> /health answer
    env_changed: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    applied: bool = False


def request_urls(name: str, endpoint: dict[str, Any]) -> tuple[str, str]:
    """(job base URL, health URL) of a queue endpoint, from its `requestUrls`: the base is
    `requestUrls.run` less `/run`, what BrightRun's job client appends its paths to."""
    urls = endpoint.get("requestUrls") or {}
    run, health = urls.get("run"), urls.get("health")
    if not (isinstance(run, str) and run.endswith("/run") and isinstance(health, str)):
        raise DeployError(
            f"endpoint {name!r} ({endpoint.get('id')}) shows no queue requestUrls "
            f"({urls!r}); look at it in the RunPod console, then run deploy again"
        )
    return run.removesuffix("/run"), health


def env_values(
    plan: DeployPlan, job_urls: dict[str, str], current_urls: str = ""
) -> dict[str, str]:
    """What deploy writes into .env: endpoint URLs (by endpoint name in `job_urls`) and
    plain settings, never a key. The further bases' URLs are merged into `current_urls`
    (INFERENCE_URLS as .env has it), keeping the entries of other bases."""
    out = {}
    for key, endpoint in plan.env_keys.items():
        base = job_urls[endpoint]
        out[key] = f"{base}/openai/v1" if key == "INFERENCE_URL" else base
    if plan.base_endpoints:
        ours = {m: f"{job_urls[e]}/openai/v1" for m, e in plan.base_endpoints.items()}
        out["INFERENCE_URLS"] = merge_inference_urls(current_urls, ours)
    if plan.count_endpoints:  # multi-GPU trainers: where jobs of each count go
        by_count = {c: job_urls[e] for c, e in plan.count_endpoints.items()}
        out["GPU_CLUSTER_API_URLS"] = json.dumps(by_count, separators=(",", ":"))
    return {**out, **plan.env_extra}


def merge_inference_urls(current: str, ours: dict[str, str]) -> str:
    """INFERENCE_URLS with `ours` merged in; `current` itself when that changes nothing."""
    try:
        have = json.loads(current) if current.strip() else {}
    except ValueError:
        have = None
    if not isinstance(have, dict):
        raise DeployError(
            f"INFERENCE_URLS in .env is not a JSON object ({current!r}); make it one like "
            '{"<base model>": "<its /v1 URL>"} or remove it, then run deploy again'
        )
    merged = {**have, **ours}
    return current if merged == have else json.dumps(merged, separators=(",", ":"))


def _apply_step(step: Step, api: RunPodApi, ids: dict[Ref, str], echo: Callable) -> None:
    for call in step.calls:
        answer = api.execute(call, ids)
        if call.produces:
            if not (isinstance(answer, dict) and answer.get("id")):
                raise DeployError(
                    api.mask(f"{call.method} {call.path} answered without an id: {answer!r}")
                )
            ids[call.produces] = str(answer["id"])
    if step.action != "unchanged":
        done = "created" if step.action == "create" else "updated"
        echo(f"{done} {step.kind} {step.name} ({ids[step.ref]})")


def apply_plan(
    plan: DeployPlan,
    api: RunPodApi,
    env_file: Path,
    echo: Callable[[str], None] = print,
) -> DeployResult:
    """Make the plan's calls in order, read each endpoint back and check its /health, then
    write the endpoints' URLs into `env_file`."""
    result = DeployResult(plan)
    ids = result.ids
    ids.update({s.ref: s.resource_id for s in plan.steps if s.resource_id})
    for step in plan.steps:
        _apply_step(step, api, ids, echo)
    job_urls = {}
    for step in plan.endpoint_steps():
        eid = ids[step.ref]
        endpoint = result.endpoints[step.name] = api.get_endpoint(eid)
        job_urls[step.name], health_url = request_urls(step.name, endpoint)
        result.health[step.name] = api.health(health_url)
        workers = result.health[step.name].get("workers") or {}
        up = sum(v for v in workers.values() if isinstance(v, int))
        echo(
            f"endpoint {step.name} ({eid}) answers /health: {up} workers up "
            "(flex: workers start with the first job)"
        )
    current = read_env_value(env_file, "INFERENCE_URLS") or ""
    result.endpoint_urls = env_values(plan, job_urls, current)
    result.env_changed = update_env_file(env_file, result.endpoint_urls)
    result.applied = True
    return result
