"""The training methods, in one table: everything the controller and the worker say about each.

`Method` names them (`sft`, `dpo`, `orpo`, `kto`, `grpo`); `METHODS[method]` is its
`MethodInfo`: the data it trains on (`data`: chat/text rows, preference pairs, labelled
single answers, or prompts), whether it needs a reference pass (log-probabilities of the
model the job starts from, computed without gradients) or generation, its settings (names in
`SETTINGS`, each with its default, bounds, label and help), its preset (what it changes on
top of a training preset), its label and help, the planner's terms (sequences per row with
gradients, sequences per row scored once per job by the reference pass, sequences per row
scored without gradients at every step; a method that `generates` has its sampling time
and KV cache counted by the planner from `JobSpec.grading`), the live metrics it reports
and how its versions are evaluated. The Train page, the command line, the preflight, the
planner and evaluation read this table; the worker keeps the losses
(`trainer.preference_loss`, `trainer.kto_loss`).

Data kinds: `chat` (chat and text rows, every layout of `core.datasets.layouts`), `pairs`
(the preference layouts), `labelled` (the `KTO_LAYOUT`: single answers labelled desirable or
not) and `prompts` (the `PROMPTS_LAYOUT`: conversations ending with a user turn, plus the
fields a grader reads). `core.datasets.methods` maps a dataset's layout to its kind.

A method with `trains` False is stated but not yet trained by the worker: `JobSpec` refuses
it with `not_trained` as the reason. Torch-free; imports nothing of the controller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal


class Method(StrEnum):
    SFT = "sft"
    DPO = "dpo"
    ORPO = "orpo"
    KTO = "kto"
    GRPO = "grpo"


DataKind = Literal["chat", "pairs", "labelled", "prompts"]
# GRPO's loss normalisations (`trainer.grpo_loss`; TRL's names)
GrpoLoss = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
# How a version is evaluated: `answers` (the eval split's answers as references,
# `core.evaluate`), `pairs` (held-out pairs, `core.evaluate_preference`), `graders` (the
# job's graders' mean score on held-out prompts, adapter against base,
# `core.evaluate_grpo`), `job` (by the job's own eval metrics only: `job_evaluation` says
# which; the evaluator skips it)
Evaluation = Literal["answers", "pairs", "graders", "job"]
KTO_LAYOUT = "kto"  # the layout of labelled single answers (`core.datasets.kto`)
PROMPTS_LAYOUT = "prompts"  # prompts with grader fields (reinforcement fine-tuning data)


@dataclass(frozen=True)
class Setting:
    """One setting of a method: its default and bounds (`gt` < value <= `le`; `ge` <=
    value where 0 is allowed), or its `choices`; `label` and `help` as the Train page and
    the command line show them; `integer` for a count."""

    name: str
    default: float | str
    label: str
    help: str
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    step: float = 0.05
    ge: float | None = None
    integer: bool = False


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "beta",
            0.1,
            "Beta",
            "higher keeps the adapter closer to the reference (the base, or the parent)",
            gt=0,
            le=10,
        ),
        Setting(
            "loss_type",
            "sigmoid",
            "Loss",
            "DPO's variant: sigmoid (the DPO paper), hinge (SLiC) or ipo",
            choices=("sigmoid", "hinge", "ipo"),
        ),
        Setting(
            "orpo_lambda",
            0.1,
            "Lambda",
            "weight of the odds-ratio term against the chosen answers' cross-entropy",
            gt=0,
            le=10,
        ),
        Setting(
            "desirable_weight",
            1.0,
            "Desirable weight",
            "weight of the desirable answers' loss; raise it when they are fewer",
            gt=0,
            le=10,
        ),
        Setting(
            "undesirable_weight",
            1.0,
            "Undesirable weight",
            "weight of the undesirable answers' loss; raise it when they are fewer",
            gt=0,
            le=10,
        ),
        Setting(
            "num_generations",
            4,
            "Completions per prompt",
            "answers sampled and graded per prompt; their rewards are compared within it",
            gt=1,
            le=64,
            step=1,
            integer=True,
        ),
        Setting(
            "max_completion_length",
            64,
            "Max completion tokens",
            "new tokens per sampled answer",
            gt=0,
            le=32768,
            step=16,
            integer=True,
        ),
        Setting(
            "temperature",
            1.0,
            "Temperature",
            "sampling temperature of the answers (higher: more varied)",
            gt=0,
            le=5,
        ),
        Setting(
            "epsilon",
            0.2,
            "Clip epsilon",
            "how far one update may move an answer's probability ratio from 1",
            gt=0,
            le=0.99,
        ),
        Setting(
            "kl_beta",
            0.0,
            "KL weight",
            "weight of the KL to the reference (the base, or the parent); 0: none, no "
            "reference pass",
            ge=0,
            le=10,
            step=0.01,
        ),
    )
}


@dataclass(frozen=True)
class MethodInfo:
    """One row of the table (see the module docstring)."""

    method: Method
    label: str
    help: str
    data: DataKind
    reference: bool  # needs a reference pass
    generates: bool  # samples completions while training
    settings: tuple[str, ...]
    preset: Mapping[str, Any]
    grad_sequences: int  # sequences per row that take gradients (memory, 6 x FLOPs)
    reference_sequences: int  # sequences per row the reference pass scores, once per job
    step_sequences: int  # sequences per row scored without gradients at every step
    metrics: tuple[str, ...]
    evaluation: Evaluation
    trains: bool = True
    not_trained: str = ""
    job_evaluation: str = ""  # with evaluation "job": what the job's eval metrics say
    grading_settings: tuple[str, ...] = ()  # names in SETTINGS, in `JobSpec.grading`


_PAIR_METRICS = (
    "rewards_chosen",
    "rewards_rejected",
    "reward_margin",
    "reward_accuracy",
    "preference_accuracy",
)
KTO_METRICS = ("kl", "rewards_desirable", "rewards_undesirable", "reward_margin")

METHODS: dict[Method, MethodInfo] = {
    m.method: m
    for m in (
        MethodInfo(
            Method.SFT,
            "SFT: learn the answers",
            "learn the answers of chat or text rows",
            data="chat",
            reference=False,
            generates=False,
            settings=(),
            preset={},
            grad_sequences=1,
            reference_sequences=0,
            step_sequences=0,
            metrics=("loss",),
            evaluation="answers",
        ),
        MethodInfo(
            Method.DPO,
            "DPO: prefer the chosen answer",
            "learn which of two answers is preferred, against the model the job starts from",
            data="pairs",
            reference=True,
            generates=False,
            settings=("beta", "loss_type"),
            preset={"training": {"learning_rate": 5e-5}},
            grad_sequences=2,
            reference_sequences=2,
            step_sequences=0,
            metrics=_PAIR_METRICS,
            evaluation="pairs",
        ),
        MethodInfo(
            Method.ORPO,
            "ORPO: SFT and preference in one",
            "learn the chosen answers and prefer them over the rejected ones, no reference",
            data="pairs",
            reference=False,
            generates=False,
            settings=("orpo_lambda",),
            preset={"training": {"learning_rate": 8e-5}},
            grad_sequences=2,
            reference_sequences=0,
            step_sequences=0,
            metrics=_PAIR_METRICS,
            evaluation="pairs",
        ),
        MethodInfo(
            Method.KTO,
            "KTO: good and bad answers, unpaired",
            "learn from single answers labelled desirable or undesirable, against the model "
            "the job starts from",
            data="labelled",
            reference=True,
            generates=False,
            settings=("beta", "desirable_weight", "undesirable_weight"),
            preset={"training": {"learning_rate": 5e-5}},
            grad_sequences=1,
            reference_sequences=2,  # the answer, and a mismatched one for the KL estimate
            step_sequences=1,  # the mismatched answer under the adapter (KL estimate)
            metrics=KTO_METRICS,
            evaluation="job",
            job_evaluation="its job's eval split: the eval rewards of desirable and "
            "undesirable answers and their margin (eval_reward_margin)",
        ),
        MethodInfo(
            Method.GRPO,
            "GRPO: learn from graded samples",
            "sample several answers per prompt, grade them, and prefer the better ones",
            data="prompts",
            reference=False,
            generates=True,
            settings=(),
            preset={"training": {"learning_rate": 1e-5}},
            grad_sequences=1,  # per completion: a row is a prompt, `grpo.num_generations` of them
            reference_sequences=0,
            # sampling is the planner's own term (`generates`); the reference pass per
            # completion is counted from `grading.kl_beta` > 0
            step_sequences=0,
            metrics=("reward", "completion_length", "kl", "clip_ratio"),
            evaluation="graders",
            grading_settings=(
                "num_generations",
                "max_completion_length",
                "temperature",
                "epsilon",
                "kl_beta",
            ),
        ),
    )
}


def info(method: str) -> MethodInfo:
    """The table's row for `method` (a `ValueError` naming the choices for an unknown one)."""
    try:
        return METHODS[Method(method)]
    except ValueError:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}") from None


def for_data(kind: DataKind) -> tuple[Method, ...]:
    """The methods that train data of `kind`, in the table's order (trained ones only)."""
    return tuple(m for m, i in METHODS.items() if i.data == kind and i.trains)


def setting_defaults(method: str) -> dict[str, Any]:
    """The settings `method` takes, at their defaults."""
    return {name: SETTINGS[name].default for name in info(method).settings}


def words(method: str, settings: Mapping[str, Any] | None) -> str:
    """A version's method in words ("DPO β=0.1 (sigmoid)", "ORPO λ=0.1"); "" for SFT."""
    m = info(method)
    if m.method is Method.SFT:
        return ""
    s = settings or {}
    out = m.method.upper()
    for name in m.settings:
        value = s.get(name)
        if value is None or SETTINGS[name].choices:
            continue
        out += f" {_SYMBOLS.get(name, name + '=')}{value:g}"
    for name in m.settings:
        if SETTINGS[name].choices and s.get(name):
            out += f" ({s[name]})"
    return out


_SYMBOLS = {"beta": "β=", "orpo_lambda": "λ="}
