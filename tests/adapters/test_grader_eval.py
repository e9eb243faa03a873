"""Which of a GRPO job's graders the controller runs when it evaluates the version
(`core.evaluate_grpo`): string_check, text_similarity and multi of those; never python
(the worker's sandbox only); score_model only with GRADER_BASE_URL."""

from __future__ import annotations

import pytest

from core import evaluate_grpo
from core.errors import InvalidInput
from trainer.shared import graders as G

CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
PY = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1.0\n"}
JUDGE = {"type": "score_model", "name": "judge", "model": "m", "input": [{"content": "x"}]}


def _multi(*subs: dict) -> dict:
    graders = {g["name"]: g for g in subs}
    return {
        "type": "multi",
        "name": "both",
        "graders": graders,
        "calculate_output": "+".join(graders),
    }


def test_python_and_unreachable_score_model_graders_are_left_out_with_a_reason() -> None:
    runnable, skipped = evaluate_grpo.split_graders(
        [CHECK, PY, JUDGE, _multi(CHECK, PY)], G.Runners()
    )
    assert [g.name for g in runnable] == ["exact"]
    assert "only in the worker" in skipped["py"]
    assert "GRADER_BASE_URL" in skipped["judge"]
    assert "'py'" in skipped["both"] and "worker" in skipped["both"]


def test_a_score_model_grader_runs_when_an_endpoint_is_set() -> None:
    runners = G.Runners(model=lambda grader, messages: "0.5")
    runnable, skipped = evaluate_grpo.split_graders([JUDGE, _multi(CHECK)], runners)
    assert [g.name for g in runnable] == ["judge", "both"] and not skipped


def test_no_grader_that_runs_here_is_refused() -> None:
    with pytest.raises(InvalidInput, match="none of the job's graders"):
        evaluate_grpo.split_graders([PY], G.Runners())
