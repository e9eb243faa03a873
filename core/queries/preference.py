"""A preference-tuning job's (DPO, ORPO) own metric series, for the Jobs page's chart.

`preference_series` reads the newest `max_points` metrics events that carry preference
metrics (`trainer.preference_loss`): reward margin and preference accuracy per logged
step, and the eval pairs' preference accuracy where an evaluation ran. A supervised job's
series is empty. Another user's job is `NotFound`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from core.db import repo
from core.db.tables import JobEvent
from core.users import Actor


@dataclass(frozen=True)
class PreferenceSeries:
    step: list[int] = field(default_factory=list)
    reward_margin: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.step


def preference_series(
    actor: Actor, session: Session, job_id: str, max_points: int = 400
) -> PreferenceSeries:
    """The job's preference metrics, oldest first (see the module docstring)."""
    repo.get_job(actor, session, job_id)
    data = JobEvent.data
    margin = data["reward_margin"].as_float()
    rows = session.execute(
        select(
            data["step"].as_integer(),
            margin,
            data["preference_accuracy"].as_float(),
            data["eval_preference_accuracy"].as_float(),
        )
        .where(and_(JobEvent.job_id == job_id, JobEvent.type == "metrics", margin.is_not(None)))
        .order_by(JobEvent.seq.desc())
        .limit(max_points)
    ).all()[::-1]
    evals = [(int(r[0]), float(r[3])) for r in rows if r[3] is not None]
    return PreferenceSeries(
        step=[int(r[0]) for r in rows],
        reward_margin=[float(r[1]) for r in rows],
        accuracy=[float(r[2]) if r[2] is not None else 0.0 for r in rows],
        eval_step=[s for s, _ in evals],
        eval_accuracy=[v for _, v in evals],
    )
