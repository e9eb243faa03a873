"""Trying graders before training: sample answers graded on the first rows of a dataset, so a
broken grader shows before a GPU is paid for. The Train page and `brightrun grader test`
call `try_graders`.

Each answer is graded against each of the first `rows` rows; `answer_field` grades the
row's own field as the answer too (e.g. its reference, which should get full marks). Python
graders are user code and run only in the worker, never here: they score 0 with that
reason, as does a score model (the worker's model endpoint). A grader that cannot be parsed
raises `InvalidInput` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core import datasets
from core.errors import InvalidInput
from core.users import Actor


@dataclass(frozen=True)
class Trial:
    row: int  # 1-based, in the dataset's train split
    answer: str
    score: float
    error: str | None  # why the grader failed on this answer (score 0)


def parse_graders(graders: Any) -> list[Any]:
    """OpenAI's grader JSON (one grader or a list) parsed; `InvalidInput` names the field."""
    from trainer.shared import graders as G

    listed = graders if isinstance(graders, list) else [graders]
    try:
        return [G.parse(g, f"graders[{k}]") for k, g in enumerate(listed)]
    except G.BadGrader as e:
        raise InvalidInput(str(e)) from None


def try_graders(
    actor: Actor,
    session: Any,
    store: Any,
    dataset_id: str,
    graders: Any,
    answers: list[str],
    *,
    answer_field: str = "",
    rows: int = 3,
) -> list[Trial]:
    """Grade `answers` (and the rows' `answer_field`) with `graders` (OpenAI's grader JSON:
    one grader or a list, whose scores add up as the job's reward does) on the first `rows`
    rows."""
    from trainer.shared import graders as G

    if not answers and not answer_field:
        raise InvalidInput("give a sample answer, or a row field to grade as the answer")
    parsed = parse_graders(graders)
    items = datasets.preview_rows(actor, session, store, dataset_id, rows, "train", 100_000)
    out: list[Trial] = []
    for k, item in enumerate(items, start=1):
        tried = list(answers)
        if answer_field:
            value = item.get(answer_field)
            tried.append(value if isinstance(value, str) else json.dumps(value))
        for answer in tried:
            sample = G.make_sample(answer)
            scores = [G.grade(g, sample, item, G.Runners()) for g in parsed]
            errors = [s.error for s in scores if s.error]
            value = sum(s.value for s in scores)
            out.append(Trial(k, answer, value, "; ".join(errors) or None))
    return out
