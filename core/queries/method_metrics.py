"""A job's own live metrics beyond the loss, as its method's table row names them
(`trainer.shared.methods`: KTO's KL and rewards, GRPO's reward, rewards per grader,
completion length, KL and clip ratio), for the Jobs page's chart.

`method_series` reads the newest `max_points` metrics events of the job: for each metric
the table names, the train values per logged step (a GRPO grader's `reward_<name>` goes
with `reward`). Methods whose metrics have their own chart (SFT's loss, DPO and ORPO's
`core.queries.preference`) give an empty series. Another user's job is `NotFound`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import repo
from core.db.tables import JobEvent
from core.users import Actor
from trainer.shared.methods import METHODS, Method


@dataclass(frozen=True)
class MethodSeries:
    step: list[int] = field(default_factory=list)
    # metric group (a table metric) -> series name -> one value per step (None: not logged)
    groups: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.step or not self.groups


# Methods whose metrics have a chart of their own: SFT's loss curve, the pairs' preference
# chart. Every other method's table metrics are drawn here, one panel each.
_OWN_CHART = frozenset({"answers", "pairs"})


def _group(key: str, names: tuple[str, ...]) -> str | None:
    if key in names:
        return key
    base = key.split("_", 1)[0]
    return base if base in names and key != "reward_margin" else None


def method_series(
    actor: Actor, session: Session, job_id: str, max_points: int = 400
) -> MethodSeries:
    """The job's method metrics, oldest first (see the module docstring)."""
    job = repo.get_job(actor, session, job_id)
    m = METHODS.get((job.spec or {}).get("method") or Method.SFT)
    if m is None or m.evaluation in _OWN_CHART:
        return MethodSeries()
    rows = (
        session.execute(
            select(JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
            .order_by(JobEvent.seq.desc())
            .limit(max_points)
        )
        .scalars()
        .all()[::-1]
    )
    steps: list[int] = []
    groups: dict[str, dict[str, list[float | None]]] = {}
    for n, data in enumerate(rows):
        steps.append(int(data.get("step", n + 1)))
        for key, value in data.items():
            group = _group(key, m.metrics)
            if group is None or not isinstance(value, int | float):
                continue
            series = groups.setdefault(group, {}).setdefault(key, [None] * n)
            series.append(float(value))
        for series_set in groups.values():
            for values in series_set.values():
                values.extend([None] * (n + 1 - len(values)))
    return MethodSeries(steps, groups)
