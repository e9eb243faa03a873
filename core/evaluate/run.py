"""Running an evaluation: `evaluate_version` now, `start_after_job` in the background
after a training job (see `core.evaluate`)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core import eval_owner, evaluate_grpo, evaluate_preference, tool_scores
from core.clients import inference
from core.clients.storage import make_blob_store
from core.datasets import eval_key, no_eval_split_reason
from core.db import repo, session_scope
from core.errors import BrightRunError, InvalidInput
from core.evaluate.scores import METRICS, differences, judge, mean_scores, score
from core.settings import Settings
from core.users import Actor
from trainer.shared.methods import METHODS, Method

log = logging.getLogger("brightrun.evaluate")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _set_status(actor: Actor, settings: Settings, version_id: str, **fields: Any) -> None:
    if fields.get("status") in eval_owner.IN_FLIGHT:
        fields.setdefault("owner", eval_owner.owner_tag())  # who runs it (`core.eval_owner`)
    with session_scope(settings) as s:
        repo.update_version(actor, s, version_id, eval_scores={**fields, "updated_at": _now()})


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
    judged = (
        _judged(client, settings, rows, served, base) if _judging(settings, use_judge) else None
    )
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


def _judging(settings: Settings, use_judge: bool | None) -> bool:
    return settings.eval_judge if use_judge is None else use_judge


def _judged(
    client: Any, settings: Settings, rows: Sequence[Any], served: str, base: str
) -> dict[str, Any]:
    """The judge's verdicts on answered rows (EVAL_JUDGE_MODEL, or the base itself)."""
    return judge(client, settings.eval_judge_model or base, rows, served, base).to_dict()


def _judged_pairs(
    client: Any, settings: Settings, pairs: Sequence[dict[str, Any]], served: str, base: str
) -> dict[str, Any]:
    """Win rate against the base on held-out preference prompts: adapter and base answer
    each pair's prompt greedily, the judge compares them with the chosen answer as the
    reference."""
    sampling = inference.Sampling(temperature=0.0, max_tokens=settings.eval_max_tokens, seed=0)
    cases = evaluate_preference.prompt_cases(pairs)
    rows = inference.compare_on_set(client, cases, [served, base], sampling)
    return _judged(client, settings, rows, served, base)


def _gather(
    actor: Actor, settings: Settings, store: Any, version_id: str, max_rows: int | None
) -> tuple[str, Any, str, str]:
    """(kind, cases, the version's folder, its base): "graders" (held-out prompts and the
    job's grading), "pairs" (held-out preference pairs) or "answers" (chat cases)."""
    prompts = evaluate_grpo.cases(actor, settings, store, version_id, max_rows)
    if prompts is not None:
        rows, grading, folder, trained_on = prompts
        return "graders", (rows, grading), folder, trained_on
    pairs = evaluate_preference.cases(actor, settings, store, version_id, max_rows)
    if pairs is not None:
        return "pairs", *pairs
    return "answers", *_cases(actor, settings, store, version_id, max_rows)


def _scored(
    found: tuple[str, Any, str, str],
    client: Any,
    settings: Settings,
    served: str,
    base: str,
    judging: bool,
    tools: Any,
) -> dict[str, Any]:
    """The result of one kind of evaluation (`_gather`'s); `tools()` adds tool scores."""
    kind, cases, _, trained_on = found
    if kind == "graders":  # graded by the job's graders on held-out prompts
        return evaluate_grpo.result(client, settings, cases, served, base, trained_on)
    if kind == "pairs":  # preference data: accuracy on held-out pairs
        result = evaluate_preference.result(client, settings, cases, served, base, trained_on)
        if judging:
            result["judge"] = _judged_pairs(client, settings, cases, served, base)
        return result
    result = _result(client, settings, cases, served, base, trained_on, judging)
    result["tools"] = tools()
    return result


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
    """Evaluate one version now and store the result (see `core.evaluate`). Returns
    the stored `eval_scores`. Raises `InvalidInput` when there is nothing to evaluate
    with, `InferenceError`s when the server fails; the failure is stored first."""
    store = store or make_blob_store(settings)
    found = _gather(actor, settings, store, version_id, max_rows)
    folder, trained_on = found[2], found[3]
    _set_status(actor, settings, version_id, status="running", started_at=_now())
    own = client is None
    client = client or inference.client_for_base(settings, trained_on)  # its base's endpoint
    served, loaded = f"eval-{version_id}", False
    try:
        base = client.base_model()
        served, loaded = _serve(client, settings, served, folder)
        result = _scored(
            found,
            client,
            settings,
            served,
            base,
            _judging(settings, use_judge),
            lambda: tool_scores.for_version(
                actor, settings, store, version_id, client, served, base
            ),
        )
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
        no_split = "the version has no dataset"  # None once its dataset has an eval split
        if v.dataset_id:
            ds = repo.get_dataset(actor, s, v.dataset_id, include_deleted=True)
            has_split = bool(eval_key(ds)) and ds.deleted_at is None
            no_split = None if has_split else no_eval_split_reason(ds)
        return v.id, no_split


def _evaluated_by_job(actor: Actor, settings: Settings, version_id: str) -> str | None:
    """Why the version is not evaluated here (its method's table row says its job's eval
    metrics score it: KTO, GRPO), else None."""
    with session_scope(settings) as s:
        method = (repo.get_version(actor, s, version_id).settings or {}).get("method")
    m = METHODS.get(method or Method.SFT)
    if m is None or m.evaluation != "job":
        return None
    return f"{m.method.upper()} versions are scored by {m.job_evaluation}"


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
        version_id, no_split = found
        by_job = _evaluated_by_job(actor, settings, version_id)
        if by_job:
            _set_status(actor, settings, version_id, status="skipped", reason=by_job)
            return None
        if no_split:
            _set_status(actor, settings, version_id, status="skipped", reason=no_split)
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
