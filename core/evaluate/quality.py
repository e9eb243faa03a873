"""Reading stored evaluations: `report` for one version, `quality_points` for the
Adapters page's "quality per dollar" (see `core.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core import adapters
from core.db import repo
from core.db.tables import Job
from core.errors import InvalidInput
from core.evaluate.scores import METRICS
from core.users import Actor


@dataclass(frozen=True)
class QualityPoint:
    version_id: str
    label: str
    adapter: str
    job_id: str | None
    parent_label: str | None
    cost_usd: float  # the job that made this version
    lineage_cost_usd: float  # that job plus every ancestor version's job
    score: float  # the adapter's mean `metric`
    base_score: float  # the base model's, on the same cases

    @property
    def gain_per_dollar(self) -> float | None:
        """Score points gained over the base per dollar of lineage spend."""
        return (
            (self.score - self.base_score) / self.lineage_cost_usd
            if self.lineage_cost_usd > 0
            else None
        )


def quality_points(actor: Actor, session: Any, metric: str = "rouge_l") -> list[QualityPoint]:
    """Every evaluated version of the actor with its cost (see `core.evaluate`)."""
    if metric not in METRICS:
        raise InvalidInput(f"metric must be one of {', '.join(METRICS)}")
    out = []
    for a in repo.list_adapters(actor, session):
        for v in repo.list_versions(actor, session, a.id, include_checkpoints=False):
            ev = v.eval_scores or {}
            if ev.get("status") != "done" or metric not in (ev.get("adapter") or {}):
                continue
            chain = repo.version_lineage(actor, session, v.id)
            costs = {}
            for x in chain:
                job = session.get(Job, x.job_id) if x.job_id else None
                if job is not None and job.owner_id == actor.user_id:
                    costs[job.id] = float(job.cost_usd or 0.0)
            own = costs.get(v.job_id or "", 0.0)
            parent = chain[1] if len(chain) > 1 else None
            out.append(
                QualityPoint(
                    version_id=v.id,
                    label=adapters.label(a.name, v),
                    adapter=a.name,
                    job_id=v.job_id,
                    parent_label=adapters.label(adapters.adapter_name_of(session, parent), parent)
                    if parent
                    else None,
                    cost_usd=own,
                    lineage_cost_usd=sum(costs.values()),
                    score=float(ev["adapter"][metric]),
                    base_score=float(ev["base"][metric]),
                )
            )
    return out


def report(actor: Actor, session: Any, version_id: str) -> dict[str, Any] | None:
    """The stored evaluation of a version (None when it never ran). NotFound for another
    user's version."""
    v = repo.get_version(actor, session, version_id)
    return dict(v.eval_scores) if v.eval_scores else None
