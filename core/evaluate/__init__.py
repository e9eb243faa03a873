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
   server of the version's base (INFERENCE_URLS, else INFERENCE_URL), greedy (temperature 0, seed 0), at most EVAL_MAX_TOKENS tokens.
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
   between the two answers, then by how much the scores differ), at most `DIFFERENCES`;
   and `tools`, when eval rows call tools: function-name accuracy, exact argument match
   and argument F1 of adapter and base (`core.tool_scores`).

A version trained on preference pairs is scored on held-out pairs instead
(`core.evaluate_preference`: preference accuracy and mean margin); with the judge on,
adapter and base answer the pairs' prompts and the judge compares them as in 4, with the
chosen answer as the reference. A version whose method learns from graders
(`trainer.shared.methods`: the row's `evaluation` is "graders") is scored on held-out
prompts by the job's graders that can run in the controller (`core.evaluate_grpo`: the
mean reward of adapter and base; python graders run only in the worker and are left out,
with the reason stored). A version whose method is scored by its job's own eval metrics
(`trainer.shared.methods`: KTO's reward margin) is `skipped` with a reason that says which.

Status values: `pending` (queued), `running`, `done`, `failed` (with `error`),
`skipped` (with `reason`). Failures are stored, logged and never raised into `sync`.

`quality_points` gives the Adapters page its "quality per dollar" data: every evaluated
version with its job's cost and the cost of its whole lineage (continued training builds
on the parent's spend).

Modules: `scores` (the metrics, the judge, the differences), `run` (evaluating a
version, now or after its job), `quality` (reading stored evaluations).
"""

from core.evaluate.quality import QualityPoint, quality_points, report
from core.evaluate.run import evaluate_version, run_in_background, start_after_job
from core.evaluate.scores import (
    JUDGE_PROMPT,
    METRIC_LABELS,
    METRICS,
    JudgeResult,
    differences,
    exact_match,
    judge,
    mean_scores,
    normalize_answer,
    parse_verdict,
    rouge_l,
    score,
    token_f1,
)

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
    "run_in_background",
    "QualityPoint",
    "quality_points",
    "report",
]
