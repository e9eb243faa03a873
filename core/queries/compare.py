"""Compare runs: 2 to 6 of the actor's jobs side by side, as plain data.

`compare_jobs(actor, session, job_ids, target_eval_loss=None)` returns a `Comparison`:

- per run (`RunCurves`): train loss, learning rate and tokens/s against *tokens seen* (the
  loss-carrying tokens the trainer reports with every metrics event as `tokens_seen`), so
  runs with different batch sizes or sequence lengths line up; eval loss against tokens
  seen; the run's cost, and its cost to reach the target eval loss;
- `settings`: every setting (base model, dataset, GPU type, each field of the resolved
  spec) whose value is not the same in all runs, with each run's value;
- per run, the evaluation scores of the adapter it produced (the mean of each metric for
  the adapter and for the base model on the same cases), when it was evaluated.

Train curves are downsampled in the database to at most `max_points` buckets per run (mean
loss, learning rate and tokens/s, the bucket's largest tokens seen); evaluations are few
and all kept. Events without `tokens_seen` (written before the trainer reported it) are
left out of the curves; a run with none says so in `note`.

Cost to reach the target: the first evaluation at or below it; the job's cost up to then
is its set-up (billed time that was not training: the cost less the rate times the
training seconds of its last metrics) plus the rate times the training seconds at that
evaluation, never more than the job's cost. `target_eval_loss` defaults to the highest of
the runs' best eval losses: the loss every run with evaluations reached. An eval loss means
what its method's loss means (SFT's is the answers' cross-entropy, DPO's the preference
loss on held-out pairs, ...): when the runs with evaluations used different methods there
is no default target (`mixed_methods` names them, and `metric_notes` says why), and a
given target is applied to each run as asked.

Raises `InvalidInput` for fewer than 2 or more than 6 distinct jobs; another user's job
is `NotFound`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from core.db import repo
from core.db.tables import Job, JobEvent
from core.errors import InvalidInput, NotFound
from core.queries.jobs import live_cost_usd
from core.users import Actor
from trainer.shared.methods import METHODS, SETTINGS, Method, info

MIN_RUNS, MAX_RUNS = 2, 6
# Spec fields that differ between any two jobs without saying anything about the run.
_NOT_SETTINGS = (
    "version",
    "job_id",
    "first_seq",
    "resume_from",
    "output.",
    "merge.",
    "cache.",
    "data.train_url",
    "data.train_path",
    "data.eval_url",
    "data.eval_path",
)


@dataclass(frozen=True)
class RunCurves:
    job_id: str
    label: str  # adapter name (or job id) and status, as the legend shows it
    status: str
    cost_usd: float  # so far, for a running job
    tokens: list[int] = field(default_factory=list)  # tokens seen at each train point
    loss: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    tokens_per_s: list[float | None] = field(default_factory=list)
    eval_tokens: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    best_eval_loss: float | None = None
    cost_to_target_usd: float | None = None  # None: never reached the target (or no evaluations)
    eval_scores: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # {"adapter"|"base": {metric: mean}}
    note: str = ""


@dataclass(frozen=True)
class SettingDiff:
    name: str  # "training.learning_rate", "base model", ...
    values: list[str]  # one per run, in the runs' order


@dataclass(frozen=True)
class Comparison:
    runs: list[RunCurves]
    settings: list[SettingDiff]
    target_eval_loss: float | None
    mixed_methods: tuple[str, ...] = ()  # the methods of runs whose eval losses differ in kind

    def settings_table(self) -> list[dict[str, str]]:
        """One row per differing setting: {"setting": name, <run label>: value, ...}."""
        return [
            {"setting": d.name, **{r.label: v for r, v in zip(self.runs, d.values, strict=True)}}
            for d in self.settings
        ]

    def summary_table(self) -> list[dict[str, Any]]:
        """One row per run: status, cost, best eval loss, cost to reach the target, scores."""
        target = "–" if self.target_eval_loss is None else f"{self.target_eval_loss:.4f}"
        rows = []
        for r in self.runs:
            row: dict[str, Any] = {
                "run": r.label,
                "job": r.job_id,
                "status": r.status.lower(),
                "cost ($)": round(r.cost_usd, 4),
                "best eval loss": "–" if r.best_eval_loss is None else r.best_eval_loss,
                f"cost to eval loss {target} ($)": "–"
                if r.cost_to_target_usd is None
                else round(r.cost_to_target_usd, 4),
            }
            for who in ("adapter", "base"):
                for metric, value in sorted(r.eval_scores.get(who, {}).items()):
                    row[f"{who} {metric}"] = round(value, 4)
            rows.append(row)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        return [{k: row.get(k, "–") for k in columns} for row in rows]  # never an empty cell

    def metric_notes(self) -> list[str]:
        """What each score in `summary_table` measures (those `METRIC_MEANINGS` explains),
        and the training reward margin's, so margins of different kinds are not compared."""
        shown = {m for r in self.runs for who in r.eval_scores.values() for m in who}
        if "mean_margin" in shown:
            shown.add("reward_margin")
        notes = [f"{m}: {METRIC_MEANINGS[m]}" for m in METRIC_MEANINGS if m in shown]
        if self.mixed_methods:
            names = " and ".join(info(m).method.upper() for m in self.mixed_methods)
            notes.append(
                f"eval loss: the {names} runs' eval losses are different losses (each is its "
                "method's own loss on held-out rows), so no target is set by default and "
                "their values are not to be compared with each other"
            )
        return notes

    def curve_rows(self) -> list[dict[str, Any]]:
        """Every curve point as a flat row (the CSV the command line writes): run, job,
        series (train or eval), tokens seen, and the values at that point."""
        out: list[dict[str, Any]] = []
        for r in self.runs:
            for t, loss, lr, tps in zip(r.tokens, r.loss, r.lr, r.tokens_per_s, strict=True):
                out.append(
                    {
                        "run": r.label,
                        "job": r.job_id,
                        "series": "train",
                        "tokens_seen": t,
                        "loss": loss,
                        "learning_rate": lr,
                        "tokens_per_s": tps,
                    }
                )
            for t, loss in zip(r.eval_tokens, r.eval_loss, strict=True):
                out.append(
                    {
                        "run": r.label,
                        "job": r.job_id,
                        "series": "eval",
                        "tokens_seen": t,
                        "loss": loss,
                        "learning_rate": None,
                        "tokens_per_s": None,
                    }
                )
        return out

    def curves_csv(self) -> str:
        """`curve_rows` as CSV text (header first; empty cells for missing values)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(_CSV_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.curve_rows())
        return buf.getvalue()


_CSV_FIELDS = ("run", "job", "series", "tokens_seen", "loss", "learning_rate", "tokens_per_s")


def _num(v: Any) -> float | None:
    return (
        float(v)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        else None
    )


def compare_jobs(
    actor: Actor,
    session: Session,
    job_ids: Sequence[str],
    target_eval_loss: float | None = None,
    max_points: int = 400,
) -> Comparison:
    """See the module docstring."""
    ids = list(dict.fromkeys(job_ids))
    if not MIN_RUNS <= len(ids) <= MAX_RUNS:
        raise InvalidInput(f"compare {MIN_RUNS} to {MAX_RUNS} different jobs (got {len(ids)})")
    jobs = [repo.get_job(actor, session, i) for i in ids]
    curves = [_curves(session, j, max_points) for j in jobs]
    evaluated = [(j, c) for j, c in zip(jobs, curves, strict=True) if c[2]]
    methods = tuple(dict.fromkeys(_method(j) for j, _ in evaluated))
    if target_eval_loss is None and len(methods) == 1:
        target_eval_loss = max(min(c[2]) for _, c in evaluated)
    runs = [_run(actor, session, j, c, target_eval_loss) for j, c in zip(jobs, curves, strict=True)]
    return Comparison(
        runs=runs,
        settings=_differences(actor, session, jobs),
        target_eval_loss=target_eval_loss,
        mixed_methods=methods if len(methods) > 1 else (),
    )


def _method(job: Job) -> str:
    return str((job.spec or {}).get("method") or Method.SFT)


def _curves(
    session: Session, job: Job, max_points: int
) -> tuple[list[tuple], list[int], list[float], list[float]]:
    """(train rows (tokens, loss, lr, tokens/s), eval tokens, eval losses, eval training
    seconds), in one query each."""
    data = JobEvent.data
    tokens, loss, lr, tps = (
        data["tokens_seen"].as_integer(),
        data["loss"].as_float(),
        data["lr"].as_float(),
        data["tokens_per_s"].as_float(),
    )
    ev, elapsed = data["eval_loss"].as_float(), data["elapsed_s"].as_float()
    base = and_(JobEvent.job_id == job.id, JobEvent.type == "metrics", tokens.is_not(None))
    size = max(1, math.ceil((job.last_seq + 1) / max(2, max_points)))
    train = session.execute(
        select(func.max(tokens), func.avg(loss), func.avg(lr), func.avg(tps))
        .where(base)
        .group_by(JobEvent.seq // size)
        .order_by(func.min(JobEvent.seq))
    ).all()
    evals = session.execute(
        select(tokens, ev, elapsed).where(base, ev.is_not(None)).order_by(JobEvent.seq)
    ).all()
    evals = [(int(t), float(e), _num(s)) for t, e, s in evals if _num(e) is not None]
    return (
        [tuple(r) for r in train],
        [t for t, _, _ in evals],
        [e for _, e, _ in evals],
        [s for _, _, s in evals],
    )


def _last_elapsed(session: Session, job_id: str) -> float | None:
    elapsed = JobEvent.data["elapsed_s"].as_float()
    row = session.execute(
        select(elapsed)
        .where(JobEvent.job_id == job_id, JobEvent.type == "metrics", elapsed.is_not(None))
        .order_by(JobEvent.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    return _num(row)


def cost_to_reach(
    cost_usd: float,
    rate_per_s: float,
    train_s_total: float | None,
    eval_losses: Sequence[float],
    eval_train_s: Sequence[float | None],
    target: float | None,
) -> float | None:
    """What the job had cost when its eval loss first reached `target` (module docstring)."""
    if target is None or train_s_total is None:
        return None
    set_up = max(0.0, cost_usd - rate_per_s * train_s_total)
    for loss, seconds in zip(eval_losses, eval_train_s, strict=True):
        if loss <= target + 1e-12 and seconds is not None:
            return min(cost_usd, set_up + rate_per_s * seconds)
    return None


def _run(
    actor: Actor, session: Session, job: Job, curves: tuple, target: float | None
) -> RunCurves:
    train, eval_tokens, eval_loss, eval_s = curves
    cost = live_cost_usd(job)
    note = "" if train or eval_tokens else "no token counts recorded for this run: nothing to plot"
    return RunCurves(
        job_id=job.id,
        label=f"{job.adapter_name or job.id} ({job.id[-6:]})",
        status=job.status,
        cost_usd=cost,
        tokens=[int(r[0]) for r in train],
        loss=[_num(r[1]) for r in train],
        lr=[_num(r[2]) for r in train],
        tokens_per_s=[_num(r[3]) for r in train],
        eval_tokens=eval_tokens,
        eval_loss=eval_loss,
        best_eval_loss=min(eval_loss) if eval_loss else _num(job.eval_loss),
        cost_to_target_usd=cost_to_reach(
            cost,
            float(job.rate_per_s or 0.0),
            _last_elapsed(session, job.id),
            eval_loss,
            eval_s,
            target,
        ),
        eval_scores=_scores(actor, session, job.id),
        note=note,
    )


def _scores(actor: Actor, session: Session, job_id: str) -> dict[str, dict[str, float]]:
    """The mean scores of the newest evaluated version the job produced (not a checkpoint)."""
    versions = [v for v in repo.list_versions(actor, session, job_id=job_id) if not v.is_checkpoint]
    for v in sorted(versions, key=lambda v: -(v.version or 0)):
        ev = v.eval_scores or {}
        if ev.get("status") == "done":
            return {
                who: {k: float(x) for k, x in (ev.get(who) or {}).items() if _num(x) is not None}
                for who in ("adapter", "base")
            }
    return {}


def _flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Each set field as a string; a field left unset (None) is not listed (it reads "–")."""
    out: dict[str, str] = {}
    for k, v in spec.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        elif v is None:
            continue
        elif not any(name == x or (x.endswith(".") and name.startswith(x)) for x in _NOT_SETTINGS):
            out[name] = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
    return out


def _method_settings(flat: dict[str, str], method: str) -> dict[str, str]:
    """The spec's method settings (`preference.*`, `grading.*`) under the methods' table's
    labels, only those the job's method uses (a DPO spec carries ORPO's lambda unused)."""
    try:
        uses = set(info(method).settings) | set(info(method).grading_settings)
    except ValueError:  # a method this version does not know: its settings as stored
        return flat
    out: dict[str, str] = {}
    for name, value in flat.items():
        section, _, field_name = name.partition(".")
        if section not in ("preference", "grading") or field_name not in SETTINGS:
            out[name] = value
        elif field_name in uses:
            out[_setting_label(field_name)] = value
    return out


def _setting_label(name: str) -> str:
    """ "Beta (DPO, KTO)": the table's label and the methods that use the setting."""
    users = [m.upper() for m, i in METHODS.items() if name in (*i.settings, *i.grading_settings)]
    return f"{SETTINGS[name].label} ({', '.join(users)})"


# What each evaluation score and training metric measures, said next to the numbers.
METRIC_MEANINGS: dict[str, str] = {
    "mean_margin": "the mean, over the eval split's pairs, of the chosen answer's summed "
    "token log-probability minus the rejected one's (nats, the model's own preference; "
    "grows with answer length, not scaled by beta)",
    "preference_accuracy": "the share of eval pairs whose chosen answer has the higher "
    "summed log-probability",
    "reward_margin": "training reward margin: beta x (how much the adapter raised the chosen "
    "answer's log-probability over the reference model, less the same for the rejected "
    "one), per batch; it starts at 0 and stays small, so it is not comparable with "
    "mean_margin",
}


def _differences(actor: Actor, session: Session, jobs: Sequence[Job]) -> list[SettingDiff]:
    flat = []
    for j in jobs:
        try:
            dataset = (
                repo.get_dataset(actor, session, j.dataset_id, include_deleted=True).name
                if j.dataset_id
                else ""
            )
        except NotFound:
            dataset = j.dataset_id or ""
        spec = j.spec or {}
        flat.append(
            {
                "base model": j.base_model,
                "dataset": dataset,
                "GPU type": j.gpu_type,
                **_method_settings(_flatten(spec), spec.get("method") or Method.SFT),
            }
        )
    names = list(dict.fromkeys(k for f in flat for k in f))
    return [
        SettingDiff(n, [f.get(n, "–") for f in flat])
        for n in names
        if len({f.get(n, "–") for f in flat}) > 1
    ]
