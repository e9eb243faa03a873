"""Adapters page: push a version to the Hugging Face Hub, merge it into its base model's
weights on the GPU endpoint, and export it as GGUF (`core.export.push_to_hub`,
`core.export.merge`, `core.export.export_gguf`; the command line's `brightrun adapters
push`, `brightrun adapters merge` and `brightrun export gguf`). Widget keys under
`adapters.`."""

from __future__ import annotations

import streamlit as st

from components import jobs as jobs_ui
from components import live as live_timing
from components import session
from components import widgets as w
from components.sections import section
from core import export, jobs
from core.errors import BrightRunError


def hub_and_merge(version_id: str, label: str) -> None:
    hub, merge = st.columns(2)
    with hub.expander("Push to the Hugging Face Hub"):
        _hub_push(version_id)
    with merge.expander("Merge into the base model"):
        _merge(version_id, label)
    with st.expander("Export → GGUF (llama.cpp, Ollama)"):
        gguf_export(version_id)


def _hub_push(version_id: str) -> None:
    repo = st.text_input(
        "Hub model repo",
        key=f"adapters.hub_repo.{version_id}",
        placeholder="your-name/support-bot",
    )
    public = st.checkbox(
        "Public repo", key=f"adapters.hub_public.{version_id}", help="default: private"
    )
    own = st.text_input(
        "Your own Hugging Face token (optional)",
        type="password",
        key=f"adapters.hub_token.{version_id}",
        help="Without it the deployment's token pushes, only into the namespaces an "
        "admin allowed for you. Used for this push only, never stored.",
    )
    if st.button("Push", key="adapters.push", disabled=not repo):
        try:
            pushed = export.push_to_hub(
                session.actor(),
                session.settings(),
                version_id,
                repo.strip(),
                private=not public,
                store=session.store(),
                token=own.strip() or None,
            )
            st.success(f"Pushed {len(pushed.files)} files to {w.plain(pushed.url)}")
        except BrightRunError as e:
            w.show_error(e)


def _merge(version_id: str, label: str) -> None:
    st.caption(
        f"Merge {w.plain(label)} into its base model's weights on the GPU endpoint, for serving without LoRA."
    )
    dtype = st.selectbox(
        "Precision", list(export.MERGE_DTYPE_BYTES), key=f"adapters.merge_dtype.{version_id}"
    )
    hub_repo = st.text_input(
        "Also push the merged model to (optional)",
        key=f"adapters.merge_hub.{version_id}",
        placeholder="your-name/support-bot-merged",
    )
    if st.button("Merge", key="adapters.merge", type="primary"):
        try:
            job, _ = export.merge(
                session.actor(),
                session.settings(),
                version_id,
                dtype=dtype,
                hub_repo=hub_repo.strip() or None,
                client=session.runpod(),
                store=session.store(),
            )
        except BrightRunError as e:
            w.show_error(e)
        else:
            jobs_ui.go_to_job(job.id)


def evaluate_and_continue(version_id: str, label: str) -> None:
    """Evaluate the version now (`core.evaluate.evaluate_version`, as `brightrun adapters
    eval`), and continue training it (`core.jobs.continue_training`, as `brightrun
    adapters continue`)."""
    from core import datasets, evaluate

    actor, settings = session.actor(), session.settings()
    ev, cont = st.columns(2)
    with ev.expander("Evaluate now"):
        st.caption(
            "Adapter against base on its dataset's eval split, through the inference server."
        )
        if st.button("Evaluate", key="adapters.evaluate"):
            try:
                with st.spinner("Evaluating…"):
                    evaluate.evaluate_version(actor, settings, version_id, store=session.store())
                st.rerun()
            except BrightRunError as e:
                w.show_error(e)
    with cont.expander("Continue training"):
        with session.db() as s:
            items = {d.id: d.name for d in datasets.list_datasets(actor, s) if d.valid_rows > 0}
        ds = st.selectbox(
            "Dataset",
            ["", *items],
            key=f"adapters.continue_dataset.{version_id}",
            format_func=lambda i: items.get(i, "the same dataset"),
        )
        epochs = st.number_input(
            "Epochs", 0.1, 100.0, 1.0, step=0.5, key=f"adapters.continue_epochs.{version_id}"
        )
        if st.button("Continue training", key="adapters.continue", type="primary"):
            try:
                job = jobs.continue_training(
                    actor,
                    settings,
                    version_id,
                    dataset_id=ds or None,
                    training={"epochs": float(epochs), "max_steps": None},
                    client=session.runpod(),
                    store=session.store(),
                )
            except BrightRunError as e:
                w.show_error(e)
            else:
                jobs_ui.go_to_job(job.id)


def gguf_export(version_id: str) -> None:
    """Export → GGUF: the variant with its expected size (`core.export.gguf_plans`), then
    `core.export.export_gguf` (as `brightrun export gguf`); the stored files as signed links.
    A base above the controller's limit is written by a job on the GPU endpoint: its
    progress is shown live (`gguf_job_progress`) until the links come."""
    settings = session.settings()
    try:
        plans = export.gguf_plans(session.actor(), settings, version_id)
    except BrightRunError as e:
        st.caption(f"GGUF export unavailable: {w.plain(str(e))}")
        return
    labels = {
        i: ("adapter only (GGUF LoRA)" if p.adapter_only else f"merged, {p.variant}")
        + f" — about {w.size(p.expected_bytes)}"
        for i, p in enumerate(plans)
    }
    i = st.selectbox(
        "Variant", list(labels), format_func=lambda n: labels[n], key=f"adapters.gguf.{version_id}"
    )
    plan = plans[i]
    if plan.refusal:
        st.warning(plan.refusal)
    elif plan.where == "worker":
        limit = settings.gguf_local_max_params / 1e9
        st.caption(
            f"{w.plain(plan.model)} is above the {limit:.1f}B parameters merged here: a job on "
            "the GPU endpoint merges and writes it (llama.cpp quantises), with an Ollama "
            "Modelfile beside it. Its progress shows below."
            + (split_note(plan.shards) if plan.shards > 1 else "")
        )
    else:
        st.caption("Written here (llama.cpp quantises), with an Ollama Modelfile beside it.")
    job_key = f"adapters.gguf_job.{version_id}"
    if st.button("Export GGUF", key="adapters.gguf_export", disabled=bool(plan.refusal)):
        _export(version_id, plan, job_key)
    if st.session_state.get(job_key):
        gguf_job_progress(st.session_state[job_key])


def _export(version_id: str, plan: export.GgufPlan, job_key: str) -> None:
    """Run the export with a progress bar; its links, or its job's id under `job_key`."""
    bar = st.progress(0.0, text="Writing GGUF…" if plan.where == "controller" else "Sending…")
    try:
        done = export.export_gguf(
            session.actor(),
            session.settings(),
            version_id,
            variant=plan.variant,
            adapter_only=plan.adapter_only,
            store=session.store(),
            client=session.runpod(),
            on_progress=lambda stage, share: bar.progress(share, text=f"{stage}: {share:.0%}"),
        )
    except BrightRunError as e:
        bar.empty()
        w.show_error(e)
        return
    bar.empty()
    st.session_state[job_key] = done.job_id
    _gguf_links(done.files)


def _gguf_links(files: list[export.GgufFile]) -> None:
    for f in files:
        st.markdown(f"[{w.plain(f.name)}]({f.url}) — {w.size(f.size)}")


def split_note(shards: int) -> str:
    """What a split GGUF means for its user (`core.export.gguf_shards`)."""
    return (
        f" Too large for one upload, it is written as llama.cpp's split GGUF in {shards} "
        "files: llama.cpp loads them from the first; Ollama needs them joined first "
        "(`llama-gguf-split --merge`, as the Modelfile says)."
    )


def gguf_job_progress(job_id: str) -> None:
    """A `gguf` job's stage and share done (`core.export.gguf_job_status`), redrawn at the
    sync interval while it runs; its files as signed links once it completed (then the
    page is drawn again once, without the timer)."""
    ended_key = f"adapters.gguf_ended.{job_id}"
    running = not st.session_state.get(ended_key)
    every = live_timing.interval("adapters.gguf_job", session.settings().sync_interval_s, running)

    @st.fragment(run_every=every if running else None)
    @section("the GGUF export's progress")
    def _live() -> None:
        with live_timing.timed("adapters.gguf_job"):
            status = export.gguf_job_status(
                session.actor(),
                session.settings(),
                job_id,
                client=session.runpod(),
                store=session.store(),
            )
            st.progress(status.fraction, text=f"Job {job_id}: {status.stage}")
            if status.failure:
                w.show_error(f"The GGUF export failed: {status.failure}")
            _gguf_links(status.files)
        if status.done and running:
            st.session_state[ended_key] = True
            st.rerun()

    _live()
