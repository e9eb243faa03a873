"""Adapters: every version with its base model, dataset, settings, losses and size;
download as a zip, delete, open in the playground, push to the Hub, merge into the base, evaluate, continue training;
its evaluation, quality per dollar."""

import streamlit as st

from components import publish, quality, session
from components import widgets as w
from core import adapters, queries
from core.errors import BrightRunError

st.title("Adapters")
session.init_state()
actor, settings = session.actor(), session.settings()

with session.db() as s:
    rows = queries.adapter_rows(actor, s)
if not rows:
    st.info("No adapters yet: an adapter appears here when a training job completes.")
    st.page_link("app_pages/train.py", label="Train one", icon=":material/model_training:")
    st.stop()

st.dataframe(
    [
        {
            "adapter": r.label,
            "base model": r.base_model,
            "dataset": r.dataset,
            "settings": r.settings,
            "continued from": r.parent,
            "final loss": r.final_loss,
            "eval loss": r.eval_loss,
            "size": w.size(r.size_bytes),
            "created": w.when(r.created_at),
            "job": r.job_id,
        }
        for r in rows
    ],
    hide_index=True,
    width="stretch",
    column_config={
        "final loss": st.column_config.NumberColumn(format="%.4f"),
        "eval loss": st.column_config.NumberColumn(format="%.4f"),
    },
)

by_id = {r.version_id: r for r in rows}
vid = st.selectbox(
    "Adapter", list(by_id), format_func=lambda v: by_id[v].label, key="adapters.selected"
)
row = by_id[vid]
st.subheader(w.plain(row.label))
parent = f" · continued from {w.plain(row.parent)}" if row.parent else ""
st.caption(
    f"{w.plain(row.base_model)} · dataset {w.plain(row.dataset or '–')} · {row.settings} · "
    f"{w.size(row.size_bytes)}{parent}"
)
c1, c2, c3 = st.columns(3)

c1.download_button(
    "Download zip",
    queries.zip_builder(actor, settings, session.store(), vid),
    file_name=row.zip_name,
    mime="application/zip",
    key="adapters.download",
    disabled=not row.stored,
    help="PEFT files, brightrun.json and a model card" if row.stored else "no stored files",
)

if c2.button(
    "Open in playground",
    key="adapters.playground",
    disabled=not row.on_volume,
    help=None if row.on_volume else "this version is not on the inference server's volume",
):
    from core.clients import inference

    try:
        labels = [c.label for c in inference.actor_choices(actor, settings, session.inference())]
    except BrightRunError:
        labels = []
    if row.label in labels:
        st.session_state["playground.models"] = [labels[0], row.label]  # the base beside it
    st.switch_page("app_pages/playground.py")

if c3.button("Delete adapter", key="adapters.delete"):
    st.session_state["adapters.confirm_delete"] = row.adapter
    st.rerun()
if w.confirm("adapters.confirm_delete", f"adapter {row.adapter} and all its versions", row.adapter):
    try:
        with session.db() as s:
            adapters.delete_adapter(actor, s, session.store(), row.adapter)
        st.session_state["adapters.confirm_delete"] = None
        st.toast(f"Deleted {w.plain(row.adapter)}")
        st.rerun()
    except BrightRunError as e:
        w.show_error(e)

publish.hub_and_merge(vid, row.label)
publish.evaluate_and_continue(vid, row.label)
quality.evaluation_section(actor, vid, row.label)
