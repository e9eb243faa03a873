"""Settings of a GRPO job (`JobSpec.grading`, method grpo): the graders and how to sample.

`graders`: one or more graders in OpenAI's grader JSON (`trainer.shared.graders`; each is
parsed here, so a broken one is refused before the job starts); a completion's reward is
the sum of their scores, each also reported on its own. `num_generations` completions are
sampled per prompt (at `temperature`, at most `max_completion_length` new tokens); the
loss is `trainer.grpo_loss`'s (`loss_type`, `epsilon`, `kl_beta` for the KL to the
reference: the base, or the parent version). The numbers' defaults and bounds are the
methods' table's (`trainer.shared.methods.SETTINGS`, the grpo row's `grading_settings`). A python grader gets `python_wall_s`
seconds and `python_cpu_s` CPU seconds per sample. Torch-free.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainer.shared.graders import parse
from trainer.shared.methods import SETTINGS, GrpoLoss


def _setting(name: str) -> Any:
    """A GRPO setting's field: default and bounds from the methods' table."""
    s = SETTINGS[name]
    return Field(s.default, gt=s.gt, ge=s.ge, le=s.le, description=s.help)


class GrpoSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    graders: list[dict[str, Any]] = Field(min_length=1)
    num_generations: int = _setting("num_generations")
    max_completion_length: int = _setting("max_completion_length")
    temperature: float = _setting("temperature")
    loss_type: GrpoLoss = "dapo"
    epsilon: float = _setting("epsilon")
    kl_beta: float = _setting("kl_beta")
    scale_rewards: Literal["group", "batch", "none"] = "group"
    python_wall_s: float = Field(5.0, gt=0, le=120)
    python_cpu_s: int = Field(5, ge=1, le=120)

    @field_validator("graders")
    @classmethod
    def _graders(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = []
        for k, g in enumerate(v):
            names.append(parse(g, f"graders[{k}]").name)
        if len(set(names)) != len(names):
            raise ValueError(f"grader names must differ (got {names}): give each a name")
        return v
