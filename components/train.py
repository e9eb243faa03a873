"""Train page widgets: the settings form (grouped, with presets) and the plan it gives.

Defaults and presets come from the launch preflight (`core.jobs.preset`, the job spec's
defaults with a preset's changes), shared with `brightrun train --preset`. Widget keys live
under `train.`.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from components import charts
from components import widgets as w
from core import jobs, planner
from core.actions import CacheState
from core.datasets.methods import methods_for, untrainable_reason
from core.errors import BrightRunError
from trainer.shared import methods

_LORA_KEYS = {"r": "train.lora_r", "alpha": "train.lora_alpha", "dropout": "train.lora_dropout"}
PRESETS = list(jobs.PRESETS)


def widget_state(values: dict[str, Any]) -> dict[str, Any]:
    """Widget keys and values for settings in the shape of `core.jobs.preset`."""
    out = {key: values["lora"][name] for name, key in _LORA_KEYS.items()}
    training = dict(values["training"])
    early = training.pop("early_stopping", None) or {}
    out.update({f"train.{k}": v for k, v in training.items()})
    out["train.early_stopping_patience"] = early.get("patience", 0)  # 0: off
    out["train.early_stopping_min_delta"] = early.get("min_delta", 0.0)
    return {
        **out,
        "train.quantization": values["quantization"],
        "train.eval_fraction": values["eval_fraction"],
    }


STATE = widget_state(
    jobs.preset(jobs.DEFAULT_PRESET)
)  # what a new session starts with (session.init_state)


def apply_preset() -> None:
    st.session_state.update(widget_state(jobs.preset(st.session_state["train.preset"])))


def model_card(model: str, models_dir: Any) -> None:
    try:
        f = planner.describe(model, local_models_dir=models_dir)
    except planner.ModelNotDescribable as e:
        st.caption(w.plain(e))
        return
    total = f.params.total
    size = f"{total / 1e9:.1f}B" if total >= 1e9 else f"{total / 1e6:.1f}M"
    moe = f", MoE {f.experts} experts ({f.experts_per_token} active)" if f.is_moe else ""
    st.caption(
        f"{w.plain(f.name)} · {size} parameters{moe} · context {f.context_length:,} tokens · licence {f.licence}"
    )


CACHE_NOTES = {
    "local": "Model files are on this machine: nothing to download.",
    "cached": "Cached on the volume: jobs start without downloading the model.",
    "caching": "Being cached on the volume now (a cache-model job is running).",
    "not cached": "Not cached on the volume: every job downloads the model first (a longer cold start). Cache it once:",
}


def cache_note(model: str, cache: CacheState) -> None:
    """Whether the model is on the volume's model cache, with the command when it is not."""
    if cache.state == "unknown":
        st.caption(
            f"Model cache: unknown ({w.plain(cache.reason)}); a job downloads the model if it is not cached."
        )
        return
    st.caption(CACHE_NOTES[cache.state])
    if cache.state == "not cached":
        st.code(f"brightrun cache-model {model}", language="bash")


def _apply_method() -> None:
    """A method's preset learning rate (`core.jobs.METHOD_PRESETS`), else the preset's."""
    method = st.session_state["train.method"]
    lr = jobs.METHOD_PRESETS[method].get("training", {}).get("learning_rate")
    if lr is None:
        lr = jobs.preset(st.session_state.get("train.preset", jobs.DEFAULT_PRESET))["training"][
            "learning_rate"
        ]
    st.session_state["train.learning_rate"] = lr


def method_choice(layout: str) -> tuple[str, dict[str, Any] | None]:
    """(method, its settings) for a dataset of `layout`: the methods that train its kind of
    data (`core.datasets.methods`), each with its settings' widgets (labels, defaults,
    bounds and help from `trainer.shared.methods`). A layout no method trains stops the
    page with the reason."""
    options = list(methods_for(layout))
    if not options:
        w.show_error(f"This dataset cannot be trained: {untrainable_reason(layout)}.", stop=True)
    if st.session_state.get("train.method") not in options:
        st.session_state["train.method"] = options[0]
        _apply_method()
    c = st.columns(2)
    method = c[0].selectbox(
        "Method",
        options,
        format_func=lambda m: methods.info(m).label,
        key="train.method",
        on_change=_apply_method,
    )
    m = methods.info(method)
    if not m.settings:
        return method, None
    values: dict[str, Any] = {}
    for k, name in enumerate(m.settings):
        values[name] = _setting_input(c[1] if k == 0 else st, methods.SETTINGS[name])
    return method, values


EXAMPLE_GRADERS = [
    {
        "type": "string_check",
        "name": "exact",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
    }
]


def grpo_choice(method: str) -> dict[str, Any] | None:
    """GRPO's settings (`trainer.shared.grpo_spec`) when `method` samples completions: the
    graders as OpenAI's grader JSON (a list; checked here, each error shown with its field),
    and the table's grading settings (completions per prompt, their length, temperature,
    clip epsilon, KL weight). None for other methods."""
    if not methods.info(method).generates:
        return None
    from core.grader_trial import parse_graders

    text = st.text_area(
        "Graders (JSON list)",
        value=json.dumps(EXAMPLE_GRADERS, indent=2),
        height=220,
        key="train.graders",
        help="OpenAI's grader format: string_check, text_similarity, python, score_model, "
        "multi; {{item.field}} reads the row, {{sample.output_text}} the answer. Try them "
        "below, or with `brightrun grader test FILE --dataset ID`.",
    )
    try:
        graders = json.loads(text)
        graders = graders if isinstance(graders, list) else [graders]
        parse_graders(graders)
    except (json.JSONDecodeError, BrightRunError) as e:
        w.show_error(f"The graders cannot be used: {e}", stop=True)
    names = methods.info(method).grading_settings
    c = st.columns(len(names))
    values = {n: _setting_input(c[k], methods.SETTINGS[n]) for k, n in enumerate(names)}
    return {"graders": graders, **values}


def _setting_input(where: Any, s: methods.Setting) -> Any:
    """One method setting's widget, at its default and within its bounds (the table's)."""
    if s.choices:
        return where.selectbox(s.label, s.choices, key=f"train.{s.name}", help=s.help)
    if s.integer:
        return where.number_input(
            s.label,
            min_value=int(s.gt) + 1 if s.gt is not None else None,
            max_value=None if s.le is None else int(s.le),
            value=int(s.default),
            step=int(s.step),
            key=f"train.{s.name}",
            help=s.help,
        )
    low = s.ge if s.ge is not None else 0.01 if s.gt is not None else None
    return where.number_input(
        s.label,
        min_value=None if low is None else float(low),
        max_value=None if s.le is None else float(s.le),
        value=float(s.default),
        step=s.step,
        key=f"train.{s.name}",
        help=s.help,
    )


def settings_form() -> tuple[dict[str, Any], dict[str, Any], str, float]:
    """(lora, training, quantization, eval_fraction) from the grouped widgets."""
    st.selectbox(
        "Preset",
        PRESETS,
        key="train.preset",
        on_change=apply_preset,
        help="sets LoRA and training values; change any of them below",
    )
    with st.expander("LoRA", expanded=True):
        _lora_inputs()
    with st.expander("Training", expanded=True):
        evaluation = _training_inputs()
    ss = st.session_state
    lora = {
        "r": int(ss["train.lora_r"]),
        "alpha": float(ss["train.lora_alpha"]),
        "dropout": float(ss["train.lora_dropout"]),
    }
    training = {
        k: ss[f"train.{k}"]
        for k in (
            "epochs",
            "learning_rate",
            "lr_scheduler",
            "warmup_ratio",
            "micro_batch_size",
            "grad_accum",
            "max_length",
            "packing",
            "gradient_checkpointing",
            "train_on_reasoning",
        )
    }
    training.update(evaluation)
    return lora, training, ss["train.quantization"], float(ss["train.eval_fraction"])


def _lora_inputs() -> None:
    """The LoRA group: rank, alpha, dropout, quantisation."""
    c = st.columns(4)
    c[0].number_input("Rank r", 1, 1024, key="train.lora_r", help="8-64 is typical")
    c[1].number_input(
        "Alpha", 1.0, 4096.0, key="train.lora_alpha", help="twice the rank is typical"
    )
    c[2].number_input("Dropout", 0.0, 0.9, step=0.01, key="train.lora_dropout")
    c[3].selectbox(
        "Quantisation",
        ["nf4", "int8", "none"],
        key="train.quantization",
        help="nf4: QLoRA, the base model in 4 bits (least memory)",
    )


def _training_inputs() -> dict[str, Any]:
    """The training group: epochs, learning rate, lengths, batches, schedule, evaluations
    and early stopping, packing. Returns `evaluation_widgets`' settings."""
    c = st.columns(4)
    c[0].number_input("Epochs", 0.1, 100.0, step=0.5, key="train.epochs")
    c[1].number_input(
        "Learning rate", 1e-6, 0.5, format="%.1e", step=1e-5, key="train.learning_rate"
    )
    c[2].number_input("Max length (tokens)", 16, 262144, step=256, key="train.max_length")
    c[3].number_input(
        "Hold out for eval",
        0.0,
        0.5,
        step=0.05,
        key="train.eval_fraction",
        help="share of rows scored for eval loss",
    )
    c = st.columns(4)
    c[0].number_input("Micro-batch", 1, 256, key="train.micro_batch_size")
    c[1].number_input("Gradient accumulation", 1, 1024, key="train.grad_accum")
    c[2].selectbox(
        "Schedule",
        ["cosine", "linear", "constant", "constant_with_warmup"],
        key="train.lr_scheduler",
    )
    c[3].number_input("Warmup share", 0.0, 0.5, step=0.01, key="train.warmup_ratio")
    evaluation = evaluation_widgets()
    c = st.columns(3)
    c[0].toggle(
        "Packing", key="train.packing", help="several rows per sequence, no cross-row attention"
    )
    c[1].toggle(
        "Gradient checkpointing",
        key="train.gradient_checkpointing",
        help="less memory, ~30% slower",
    )
    c[2].toggle(
        "Train on reasoning",
        key="train.train_on_reasoning",
        help="the assistant's <think> blocks carry loss like its answers and tool calls",
    )
    return evaluation


def evaluation_widgets() -> dict[str, Any]:
    """Evaluations during training and early stopping on them: `eval_every` and
    `early_stopping` (None when the patience is 0: off)."""
    c = st.columns(3)
    c[0].number_input(
        "Evaluate every (steps)", 0, 1_000_000, key="train.eval_every", help="0: at the end"
    )
    c[1].number_input(
        "Early-stop patience",
        0,
        1000,
        key="train.early_stopping_patience",
        help="stop once the eval loss has not improved for this many evaluations in a row, "
        "keeping the best weights as the adapter; 0: off (train to the end)",
    )
    c[2].number_input(
        "Min improvement",
        0.0,
        10.0,
        step=0.001,
        format="%.3f",
        key="train.early_stopping_min_delta",
        help="how much lower an eval loss must be to count as an improvement",
    )
    ss = st.session_state
    patience = int(ss["train.early_stopping_patience"])
    early = {"patience": patience, "min_delta": float(ss["train.early_stopping_min_delta"])}
    return {
        "eval_every": int(ss["train.eval_every"]),
        "early_stopping": early if patience else None,
    }


def plan_view(tp: jobs.Preflight) -> None:
    if tp.plan is None:
        return
    verdict = tp.plan.verdict(tp.gpu)
    device = verdict.name
    st.plotly_chart(
        charts.memory_breakdown(tp.memory_terms, verdict.memory_bytes / 2**30, device),
        key="train.memory",
    )
    if tp.pricing is not None and tp.pricing.is_local:  # planned for the GPU it is priced as
        st.caption(
            f"Memory is planned for {w.plain(device)}, the GPU the job is priced as; "
            "it runs on this machine's CPU."
        )
    c = st.columns(2)
    c[0].metric(
        "Peak memory",
        f"{tp.plan.memory.total_bytes / 2**30:.1f} GiB",
        help=f"{verdict.name}: {verdict.verdict.replace('_', ' ')}",
    )
    if tp.time is not None:
        c[1].metric(
            "Training time",
            f"{w.duration(tp.time.seconds_low)}–{w.duration(tp.time.seconds_high)}",
            help="plus cold start: loading the model on a fresh worker",
        )
        st.caption(f"Time estimate: {tp.time.basis_text}")
    if tp.cost is not None:
        st.metric(
            "Cost",
            f"{w.money(tp.cost.usd_low)} – {w.money(tp.cost.usd_high)}",
            help=tp.pricing_note,
        )
    st.caption(f"Priced as: {tp.pricing_note}")
    if tp.budget_message:
        st.caption(w.plain(tp.budget_message))
    st.dataframe(
        [
            {
                "GPU": v.name,
                "verdict": {"fits": "fits", "tight": "tight", "does_not_fit": "does not fit"}[
                    v.verdict
                ],
                "needs (GiB)": round(v.need_bytes / 2**30, 1),
                "has (GiB)": round(v.memory_bytes / 2**30, 1),
                "suggestion": v.suggestion or "",
            }
            for v in tp.plan.verdicts
        ],
        hide_index=True,
        width="stretch",
        column_config={  # the GPU names and suggestions are read whole, never cut
            "GPU": st.column_config.TextColumn("GPU", width="medium"),
            "suggestion": st.column_config.TextColumn("suggestion", width="large"),
        },
    )
    for note in tp.notes:
        st.caption(w.plain(note))
