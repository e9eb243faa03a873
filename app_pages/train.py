"""Train: dataset, base model and settings; the planner's memory, fit per GPU, time and
cost update as they change; Launch is disabled with the reason when the plan cannot run."""

import streamlit as st

from components import jobs as jobs_ui
from components import session, train_options
from components import train as ui
from components import widgets as w
from core import actions, datasets, jobs, queries
from core.errors import BrightRunError

st.title("Train")
session.init_state()
actor, settings = session.actor(), session.settings()

with session.db() as s:
    items = [d for d in datasets.list_datasets(actor, s) if d.valid_rows > 0]
if not items:
    st.info("Upload a dataset first.")
    st.page_link("app_pages/datasets.py", label="Go to Datasets", icon=":material/dataset:")
    st.stop()

names = {d.id: d.name for d in items}
c1, c2 = st.columns(2)
dataset_id = c1.selectbox("Dataset", list(names), format_func=names.get, key="train.dataset")
models = queries.model_options(settings)
model = c2.selectbox("Base model", models, key="train.model")
ui.model_card(model, settings.data_dir / "models")
cache = actions.model_cache_state(actor, settings, model)
ui.cache_note(model, cache)
if cache.state == "not cached" and (
    cache_job := train_options.cache_button(model, actor, settings)
):
    jobs_ui.go_to_job(cache_job)

left, right = st.columns([3, 2])
with left:
    layout = next((d.layout for d in items if d.id == dataset_id), "") or ""
    method, preference = ui.method_choice(layout)
    grpo = ui.grpo_choice(method)
    if grpo is not None:
        train_options.grader_trial(actor, settings, dataset_id, grpo["graders"])
    lora, training, quantization, eval_fraction = ui.settings_form()
    lora = {**lora, **train_options.lora_targets(model, settings.data_dir / "models")}
    gpu = train_options.gpu_type(settings)
    gpus = train_options.gpu_count()
with right:
    st.subheader("Plan")
    budget = st.number_input(
        "Budget cap ($)",
        0.01,
        10_000.0,
        value=float(settings.job_budget_usd),
        step=1.0,
        key="train.budget",
        help="the job stops here and keeps what it trained",
    )
    adapter = st.text_input(
        "Adapter name", key="train.adapter_name", placeholder="default: <model>-<dataset>"
    )
    try:
        request = jobs.LaunchRequest.build(
            model=model,
            dataset_id=dataset_id,
            lora=lora,
            training=training,
            quantization=quantization,
            eval_fraction=eval_fraction,
            budget_usd=budget,
            gpu_type=gpu,
            gpus=gpus,
            adapter_name=adapter or None,
            method=method,
            preference=preference,
            grading=grpo,
        )
    except BrightRunError as e:
        w.show_error(e, stop=True)
    with session.db() as s:
        tp = jobs.preflight(request, actor, s, settings)
    ui.plan_view(tp)
    if tp.plan is not None and (hint := train_options.count_hint(tp.plan, gpu)):
        st.caption(hint)
    if tp.price_range:
        st.caption(tp.price_range)
    st.caption(f"Prices: {tp.price_source}")
    if tp.scarcity:
        st.warning(tp.scarcity)
    for reason in tp.blockers:
        w.show_error(reason)
    if st.button(
        "Launch",
        type="primary",
        disabled=not tp.can_launch,
        key="train.launch",
        help="; ".join(tp.blockers) or None,
    ):
        try:
            job = jobs.submit(
                actor, settings, request, client=session.runpod(), store=session.store()
            )
        except BrightRunError as e:
            w.show_error(e)
        else:
            jobs_ui.go_to_job(job.id)
