"""Train page widgets beyond the settings form: which modules LoRA adapts, LoRA on the
routed experts (MoE models), and the GPU type the job is planned and priced for.

`lora_targets(model, models_dir)` returns the LoRA fields to merge into the form's `lora`
({"target_modules": "all-linear" | [names], "lora_on_experts": bool}); `gpu_type(settings)`
returns the chosen GPU type id (default: the deployment's GPU_TYPE); `gpu_count()` how many
of them the job trains on (1-8), `count_hint(plan, gpu)` the planner's smallest count that
fits that type. Keys under `train.`;
their defaults are in `STATE` (registered in `components.session`).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from components import widgets as w
from core import planner
from core.settings import Settings

# The linear modules of a Qwen decoder layer (attention, then MLP); none chosen: all of them
# ("all-linear", the spec's default).
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STATE: dict[str, Any] = {
    "train.target_modules": [],
    "train.lora_on_experts": False,
    "train.gpu_type": None,
    "train.gpus": 1,
}


def lora_targets(model: str, models_dir: Any) -> dict[str, Any]:
    """The target modules and, for a mixture-of-experts model, LoRA on its routed experts."""
    chosen = st.multiselect(
        "LoRA target modules",
        TARGET_MODULES,
        key="train.target_modules",
        placeholder="all linear layers",
        help="none chosen: every linear layer (all-linear); fewer modules, fewer LoRA parameters",
    )
    try:
        moe = planner.describe(model, local_models_dir=models_dir).is_moe
    except planner.ModelNotDescribable as e:
        st.caption(f"LoRA on the routed experts: unknown for this model ({w.plain(e)})")
        moe = False
    on_experts = st.checkbox(
        "LoRA on the routed experts",
        key="train.lora_on_experts",
        disabled=not moe,
        help="MoE models: also adapt every routed expert (more memory and parameters)"
        if moe
        else "only mixture-of-experts models have routed experts",
    )
    return {
        "target_modules": list(chosen) or "all-linear",
        "lora_on_experts": bool(on_experts and moe),
    }


def gpu_type(settings: Settings) -> str:
    """The GPU type to plan and price the job for (every type the planner knows)."""
    ids = list(planner.GPU_TYPES)
    if st.session_state["train.gpu_type"] not in ids:
        st.session_state["train.gpu_type"] = (
            settings.gpu_type if settings.gpu_type in ids else ids[0]
        )
    return st.selectbox(
        "GPU type",
        ids,
        key="train.gpu_type",
        format_func=lambda g: f"{planner.GPU_TYPES[g].name} ({planner.GPU_TYPES[g].memory_gb} GB)",
    )


def gpu_count() -> int:
    """How many GPUs the job trains on (one process each; billed for every one)."""
    return int(
        st.number_input(
            "GPUs",
            1,
            8,
            step=1,
            key="train.gpus",
            help="more than one: the job runs on that many GPUs of the type (FSDP2), the "
            "same global batch, billed count x the GPU's rate",
        )
    )


def count_hint(plan: Any, gpu: str) -> str | None:
    """The planner's smallest count of `gpu` that fits the job, when it is more than one."""
    option = next((c for c in plan.gpu_counts if c.gpu == gpu), None)
    if option is None:
        return None
    if option.count is None:
        return f"even 8 x {option.name} are too small for these settings"
    if option.count == 1:
        return None
    return f"fits on {option.count} x {option.name} ({option.sharding}: {option.reason})"


def cache_button(model: str, actor: Any, settings: Settings) -> str | None:
    """A button that caches the model on the volume now (`core.actions.cache_model`, as
    `brightrun cache-model`), for the Train page's cache note when the model is not
    cached. Returns the cache job's id once it was started, else None."""
    from core import actions
    from core.errors import BrightRunError

    if not st.button(
        "Cache it now",
        key="train.cache_model",
        help="a job that downloads the model into the volume once",
    ):
        return None
    try:
        return actions.cache_model(actor, settings, model).id
    except BrightRunError as e:
        w.show_error(e)
        return None


def grader_trial(actor: Any, settings: Settings, dataset_id: str, graders: list[Any]) -> None:
    """Try the graders on the dataset's first rows with sample answers (one per line), before
    paying for a GPU: each score and any error (`core.grader_trial`)."""
    from core.clients.storage import make_blob_store
    from core.db import session_scope
    from core.errors import BrightRunError
    from core.grader_trial import try_graders

    with st.expander("Try the graders on a few rows"):
        text = st.text_area("Sample answers, one per line", key="train.grader_answers", height=90)
        field = st.text_input(
            "Or grade this row field as the answer (e.g. the reference)", key="train.grader_field"
        )
        if not st.button("Try", key="train.try_graders"):
            return
        answers = [a for a in text.splitlines() if a.strip()]
        try:
            with session_scope(settings) as s:
                trials = try_graders(
                    actor,
                    s,
                    make_blob_store(settings),
                    dataset_id,
                    graders,
                    answers,
                    answer_field=field.strip(),
                )
        except BrightRunError as e:
            w.show_error(e)
            return
        st.dataframe(
            [
                {
                    "row": t.row,
                    "answer": t.answer[:80],
                    "score": round(t.score, 4),
                    "error": t.error or "",
                }
                for t in trials
            ],
            hide_index=True,
            width="stretch",
        )
