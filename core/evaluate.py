"""Evaluation of an adapter version against its base model, stored with the version.

When a training job completes, `core.jobs` tells `start_after_job` (a subscriber of its
`JobEnded` event, `core.jobs.subscribers`): it marks the job's
version `pending` and evaluates it in a background thread, so the sync loop never waits
for it (off with EVAL_AFTER_JOB=false); the process that runs it is named on the version,
and the syncer takes over one whose process is gone (`core.eval_owner`). `evaluate_version` does the work, and is what
`brightrun adapters eval` runs:

1. The cases are the first EVAL_MAX_ROWS chat rows of the version's dataset's eval split
   (`core.clients.inference.eval_split_cases`): everything before a row's last assistant turn is
   sent, that turn is the reference. A dataset without an eval split is `skipped`.
2. Each case goes through the adapter and through the base on the configured inference
   server (INFERENCE_URL), greedy (temperature 0, seed 0), at most EVAL_MAX_TOKENS tokens.
   The adapter is loaded at run time under its own name `eval-<version id>` from the
   version's folder on the volume (so exactly this version's weights answer, whatever else
   the server has loaded) and unloaded afterwards; a server without runtime loading
   (INFERENCE_LORA_LOADING=resolver) is asked for the folder's name instead.
3. Each answer is scored against the reference with three standard metrics, averaged over
   the cases, each in [0, 1]: exact match and token-level F1 as the SQuAD v1.1 evaluation
   script defines them (lower case, punctuation and English articles removed, whitespace
   tokens), and ROUGE-L F-measure from Google's `rouge_score` package (Porter stemming;
   its tokenizer keeps ASCII letters and digits only, so text in other scripts scores 0
   there -- look at exact match and F1 for those).
4. Optionally (EVAL_JUDGE=true) an LLM judge on the same server (EVAL_JUDGE_MODEL, or the
   served base) reads each prompt, its reference and the two answers in random order
   (seeded per case) and answers A, B or T under `JUDGE_PROMPT`, which is stored with the
   result and shown. Win rate = (adapter wins + half the ties) / valid verdicts.
5. Stored on the version (`eval_scores`): status, when, the server's base, sampling,
   row count, `adapter` and `base` metric means, `delta`, the judge's result, and the
   `differences`: the cases where adapter and base answers differ most (1 - ROUGE-L
   between the two answers, then by how much the scores differ), at most `DIFFERENCES`.

Status values: `pending` (queued), `running`, `done`, `failed` (with `error`),
`skipped` (with `reason`). Failures are stored, logged and never raised into `sync`.

`quality_points` gives the Adapters page its "quality per dollar" data: every evaluated
version with its job's cost and the cost of its whole lineage (continued training builds
on the parent's spend).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import string
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import adapters, eval_owner
from core.clients import inference
from core.clients.storage import make_blob_store
from core.datasets import eval_key
from core.db import repo, session_scope
from core.db.tables import Job
from core.errors import BrightRunError, InvalidInput
from core.settings import Settings
from core.users import Actor

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "JUDGE_PROMPT",
    "normalize_answer",
    "exact_match",
    "token_f1",
    "rouge_l",
    "score",
    "mean_scores",
    "parse_verdict",
    "judge",
    "JudgeResult",
    "differences",
    "evaluate_version",
    "start_after_job",
    "QualityPoint",
    "quality_points",
    "report",
]

log = logging.getLogger("brightrun.evaluate")

METRICS = ("exact_match", "f1", "rouge_l")
METRIC_LABELS = {"exact_match": "exact match", "f1": "token F1", "rouge_l": "ROUGE-L"}
DIFFERENCES = 5
JUDGE_PROMPT = """You are judging two answers to the same request. Judge which answer is more \
correct and more helpful, using the reference answer as the ground truth when one is given. \
Ignore answer order and length.

Request:
{prompt}

Reference answer:
{reference}

Answer A:
{a}

Answer B:
{b}

Reply with exactly one letter: A if answer A is better, B if answer B is better, T for a tie."""


# --------------------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD v1.1's token-level F1 over normalised whitespace tokens."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


_scorer: Any = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (`rouge_score`, Porter stemmer)."""
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_scorer.score(reference, prediction)["rougeL"].fmeasure)


def score(prediction: str, reference: str) -> dict[str, float]:
    return {
        "exact_match": exact_match(prediction, reference),
        "f1": token_f1(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
    }


def mean_scores(per_case: Sequence[Mapping[str, float]]) -> dict[str, float]:
    n = len(per_case)
    return {m: round(sum(c[m] for c in per_case) / n, 4) if n else 0.0 for m in METRICS}


# --------------------------------------------------------------------------- judge


@dataclass(frozen=True)
class JudgeResult:
    model: str
    wins: int
    losses: int
    ties: int
    invalid: int

    @property
    def win_rate(self) -> float | None:
        valid = self.wins + self.losses + self.ties
        return round((self.wins + 0.5 * self.ties) / valid, 4) if valid else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "invalid": self.invalid,
            "win_rate": self.win_rate,
            "prompt": JUDGE_PROMPT,
        }


def parse_verdict(text: str) -> str | None:
    """The judge's letter: the first A, B or T that stands alone in its reply."""
    m = re.search(r"\b([ABT])\b", text.strip().upper())
    return m.group(1) if m else None


def judge(
    client: Any,
    judge_model: str,
    rows: Sequence[Any],
    adapter: str,
    base: str,
    seed: int = 0,
) -> JudgeResult:
    """Ask `judge_model` which of the two answers of each row is better (order shuffled,
    seeded per row)."""
    sampling = inference.Sampling(temperature=0.0, max_tokens=4, seed=seed)
    wins = losses = ties = invalid = 0
    for i, row in enumerate(rows):
        adapter_first = random.Random(seed * 1_000_003 + i).random() < 0.5
        a, b = (adapter, base) if adapter_first else (base, adapter)
        prompt = JUDGE_PROMPT.format(
            prompt=row.prompt,
            reference=row.reference or "(none)",
            a=row.answers[a],
            b=row.answers[b],
        )
        verdict = parse_verdict(
            client.chat(judge_model, [{"role": "user", "content": prompt}], sampling).text
        )
        if verdict is None:
            invalid += 1
        elif verdict == "T":
            ties += 1
        elif (verdict == "A") == adapter_first:
            wins += 1
        else:
            losses += 1
    return JudgeResult(judge_model, wins, losses, ties, invalid)


# --------------------------------------------------------------------------- running


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _set_status(actor: Actor, settings: Settings, version_id: str, **fields: Any) -> None:
    if fields.get("status") in eval_owner.IN_FLIGHT:
        fields.setdefault("owner", eval_owner.owner_tag())  # who runs it (`core.eval_owner`)
    with session_scope(settings) as s:
        repo.update_version(actor, s, version_id, eval_scores={**fields, "updated_at": _now()})


def differences(
    rows: Sequence[Any], adapter: str, base: str, per_case: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The cases where the two answers differ most (see the module docstring)."""
    ranked = []
    for row, sc in zip(rows, per_case, strict=True):
        a, b = row.answers[adapter], row.answers[base]
        gap = 1.0 - rouge_l(a, b) if (a.strip() or b.strip()) else 0.0
        ranked.append(
            (round(gap, 4), abs(sc["adapter"]["rouge_l"] - sc["base"]["rouge_l"]), row, sc)
        )
    ranked.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [
        {
            "prompt": row.prompt,
            "reference": row.reference,
            "adapter": row.answers[adapter],
            "base": row.answers[base],
            "difference": gap,
            "adapter_scores": sc["adapter"],
            "base_scores": sc["base"],
        }
        for gap, _, row, sc in ranked[:DIFFERENCES]
        if gap > 0
    ]


def _cases(
    actor: Actor, settings: Settings, store: Any, version_id: str, max_rows: int | None
) -> tuple[list[Any], str, str]:
    """The eval split's cases with a reference, the version's folder and its base model."""
    with session_scope(settings) as s:
        v = repo.get_version(actor, s, version_id)
        if not v.volume_path:
            raise InvalidInput(
                "this version has no folder on the volume for the inference server to load"
            )
        if not v.dataset_id:
            raise InvalidInput("this version has no dataset, so no eval split to evaluate on")
        cases = inference.eval_split_cases(
            actor, s, store, v.dataset_id, limit=max_rows or settings.eval_max_rows
        )
        folder, trained_on = v.volume_path, v.base_model
    cases = [c for c in cases if c.reference]
    if not cases:
        raise InvalidInput("the eval split has no rows with a reference answer")
    return cases, folder, trained_on


def _serve(client: Any, settings: Settings, served: str, folder: str) -> tuple[str, bool]:
    """Make the server answer as the version: loaded at run time under `served`, else (a
    server without runtime loading) under its folder's name. (name, loaded here)."""
    if settings.inference_lora_loading == "resolver":
        client.ensure_adapter(Path(folder).name, folder)
        return Path(folder).name, False
    try:
        already = any(m.id == served for m in client.models())
        client.load_adapter(served, folder, replace=already)
        return served, True
    except inference.RuntimeLoadingDisabled:
        if settings.inference_lora_loading == "runtime":
            raise
        client.ensure_adapter(Path(folder).name, folder)
        return Path(folder).name, False


def _result(
    client: Any,
    settings: Settings,
    cases: Sequence[Any],
    served: str,
    base: str,
    trained_on: str,
    use_judge: bool | None,
) -> dict[str, Any]:
    """Answer every case with the adapter and the base, score them, and judge them."""
    sampling = inference.Sampling(temperature=0.0, max_tokens=settings.eval_max_tokens, seed=0)
    rows = inference.compare_on_set(client, cases, [served, base], sampling)
    per_case = [
        {
            "adapter": score(r.answers[served], r.reference or ""),
            "base": score(r.answers[base], r.reference or ""),
        }
        for r in rows
    ]
    adapter_means = mean_scores([c["adapter"] for c in per_case])
    base_means = mean_scores([c["base"] for c in per_case])
    judged = None
    if settings.eval_judge if use_judge is None else use_judge:
        judged = judge(client, settings.eval_judge_model or base, rows, served, base).to_dict()
    return {
        "status": "done",
        "evaluated_at": _now(),
        "server_base": base,
        "trained_on": trained_on,
        "rows": len(rows),
        "sampling": {"temperature": 0.0, "max_tokens": settings.eval_max_tokens, "seed": 0},
        "metrics": list(METRICS),
        "adapter": adapter_means,
        "base": base_means,
        "delta": {m: round(adapter_means[m] - base_means[m], 4) for m in METRICS},
        "judge": judged,
        "differences": differences(rows, served, base, per_case),
    }


def evaluate_version(
    actor: Actor,
    settings: Settings,
    version_id: str,
    *,
    client: Any = None,
    store: Any = None,
    max_rows: int | None = None,
    use_judge: bool | None = None,
) -> dict[str, Any]:
    """Evaluate one version now and store the result (see the module docstring). Returns
    the stored `eval_scores`. Raises `InvalidInput` when there is nothing to evaluate
    with, `InferenceError`s when the server fails; the failure is stored first."""
    cases, folder, trained_on = _cases(
        actor, settings, store or make_blob_store(settings), version_id, max_rows
    )
    _set_status(actor, settings, version_id, status="running", started_at=_now())
    own = client is None
    client = client or inference.InferenceClient(settings)
    served, loaded = f"eval-{version_id}", False
    try:
        base = client.base_model()
        served, loaded = _serve(client, settings, served, folder)
        result = _result(client, settings, cases, served, base, trained_on, use_judge)
    except BrightRunError as e:
        _set_status(actor, settings, version_id, status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if loaded:
            try:
                client.unload_adapter(served)
            except inference.InferenceError as e:
                log.warning("could not unload %s after its evaluation: %s", served, e)
        if own:
            client.close()
    with session_scope(settings) as s:
        repo.update_version(actor, s, version_id, eval_scores={**result, "updated_at": _now()})
    return result


def _job_version(actor: Actor, settings: Settings, job_id: str) -> Any:
    with session_scope(settings) as s:
        versions = [v for v in repo.list_versions(actor, s, job_id=job_id) if not v.is_checkpoint]
        if not versions:
            return None
        v = versions[0]
        has_split = False
        if v.dataset_id:
            ds = repo.get_dataset(actor, s, v.dataset_id, include_deleted=True)
            has_split = bool(eval_key(ds)) and ds.deleted_at is None
        return v.id, has_split


def _run_logged(actor: Actor, settings: Settings, version_id: str) -> None:
    try:
        evaluate_version(actor, settings, version_id)
    except BrightRunError as e:  # stored on the version by evaluate_version
        log.warning("evaluation of %s failed: %s", version_id, e)
    except Exception as e:  # noqa: BLE001 - a background thread: record it, log the traceback
        log.exception("evaluation of %s failed", version_id)
        try:
            _set_status(
                actor, settings, version_id, status="failed", error=f"{type(e).__name__}: {e}"
            )
        except BrightRunError as again:
            log.warning("could not record the failed evaluation of %s: %s", version_id, again)


def start_after_job(actor: Actor, settings: Settings, job_id: str) -> threading.Thread | None:
    """Evaluate the version a completed job registered, in a background thread. Returns
    the thread (None when nothing runs: turned off, no version, no eval split). Never
    raises: a failure is logged and stored on the version."""
    if not settings.eval_after_job:
        return None
    try:
        found = _job_version(actor, settings, job_id)
        if found is None:
            return None
        version_id, has_split = found
        if not has_split:
            _set_status(
                actor,
                settings,
                version_id,
                status="skipped",
                reason="the dataset has no eval split (datasets of 20 rows or more get one when added)",
            )
            return None
        room = eval_owner.has_room(settings)
        owner = eval_owner.owner_tag() if room else None  # no room: the syncer starts it later
        _set_status(actor, settings, version_id, status="pending", queued_at=_now(), owner=owner)
    except BrightRunError as e:
        log.warning("job %s: evaluation not started: %s", job_id, e)
        return None
    return run_in_background(actor, settings, version_id) if room else None


def run_in_background(actor: Actor, settings: Settings, version_id: str) -> threading.Thread:
    """Evaluate `version_id` in a daemon thread of this process (failures are stored)."""
    thread = threading.Thread(
        target=_run_logged,
        args=(actor, settings, version_id),
        name=f"eval-{version_id}",
        daemon=True,
    )
    thread.start()
    return thread


# --------------------------------------------------------------------------- reading


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
    """Every evaluated version of the actor with its cost (see the module docstring)."""
    if metric not in METRICS:
        raise InvalidInput(f"metric must be one of {', '.join(METRICS)}")
    out = []
    for a in repo.list_adapters(actor, session):
        for v in repo.list_versions(actor, session, a.id, include_checkpoints=False):
            ev = v.eval_scores or {}
            if ev.get("status") != "done":
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
