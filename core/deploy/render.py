"""A `DeployPlan` as text: one line per resource with what changes, and for `--dry-run`
every request in full (method, URL, `Authorization: Bearer ****`, JSON body), the reads
made to plan it, the read-back and `/health` of each endpoint, and the `.env` lines.
Ids and URLs not known before the run are shown as placeholders.
"""

from __future__ import annotations

import json
from typing import Any

from core.deploy.apply import env_values, request_urls
from core.deploy.client import MASK, describe_call, placeholders
from core.deploy.errors import DeployError
from core.deploy.plan import DeployPlan, Step

_MARKS = {"create": "+ create", "update": "~ update", "unchanged": "= unchanged"}


def render_plan(plan: DeployPlan, base_url: str, *, dry_run: bool) -> str:
    """The plan as text: what each step does and, for a dry run, every request in full."""
    out: list[str] = []
    if dry_run:
        out += _reads(plan, base_url)
    out.append("")
    for step in plan.steps:
        out += _step(step, base_url, dry_run=dry_run)
    if dry_run:
        out += _afterwards(plan, base_url)
    elif not plan.has_changes:
        out.append("Nothing to change: the account already matches.")
    return "\n".join(out)


def _reads(plan: DeployPlan, base_url: str) -> list[str]:
    out = ["Dry run: nothing is created or changed, and .env is not written."]
    if plan.observed:
        out.append("\nRead the account (made now, read-only):")
    else:
        out.append(
            "\nRUNPOD_API_KEY is not set, so the account was not read: planned as if it "
            "held nothing yet. With the key, deploy first reads:"
        )
    out += [_indent(describe_call(call, base_url).split("\n")[0]) for call in plan.reads]
    return out


def _step(step: Step, base_url: str, *, dry_run: bool) -> list[str]:
    rid = f" ({step.resource_id})" if step.resource_id else ""
    out = [f"{_MARKS[step.action]} {step.kind} {step.name}{rid}"]
    out += [f"    {c.field}: {_short(c.old)} -> {_short(c.new)}" for c in step.changes]
    if step.note:
        out.append(f"    {step.note}")
    if dry_run:
        for call in step.calls:
            out += [_indent(describe_call(call, base_url), 4), ""]
    return out


def _afterwards(plan: DeployPlan, base_url: str) -> list[str]:
    out = ["Then, for each endpoint, reads it back and calls its health URL:"]
    job_urls = {}
    for step in plan.endpoint_steps():
        try:  # an endpoint the account has already shows its URLs; they never change
            job_urls[step.name], health = request_urls(step.name, step.observed or {})
        except DeployError:
            job_urls[step.name] = f"<requestUrls.run of endpoint {step.name}, less /run>"
            health = f"<requestUrls.health of endpoint {step.name}>"
        eid = step.resource_id or str(step.ref)
        out.append(_indent(f"GET {base_url.rstrip('/')}/serverless/{eid}", 4))
        out += [_indent(f"GET {health}", 4), _indent(f"Authorization: Bearer {MASK}", 4)]
    out.append("and writes into .env (other lines kept as they are):")
    out += [_indent(f"{k}={v}", 4) for k, v in env_values(plan, job_urls).items()]
    if plan.base_endpoints:
        out.append(_indent("(INFERENCE_URLS merged with the entries .env has for other bases)", 4))
    return out


def _short(value: Any) -> str:
    text = json.dumps(placeholders(value)) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + line for line in text.split("\n"))
