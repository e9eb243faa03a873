"""Datasets: upload with its limit and progress, the detected format, problems by kind,
rows as the model's chat template sees them, token lengths; rename and delete."""

import streamlit as st

from components import datasets as ui
from components import session
from components import widgets as w
from components.sections import section
from core import datasets, queries
from core.errors import BrightRunError

st.title("Datasets")
session.init_state()
actor, settings = session.actor(), session.settings()

models = queries.model_options(settings)
if st.session_state["datasets.model"] not in models:
    st.session_state["datasets.model"] = models[0]
c1, c2 = st.columns([3, 1])
model = c1.selectbox(
    "Model whose chat template and tokenizer measure the rows", models, key="datasets.model"
)
max_length = c2.number_input("Max length (tokens)", 16, 262144, step=256, key="datasets.max_length")

with st.expander("Upload a dataset", expanded=True), section("the upload"):
    ui.upload(model, int(max_length))

with session.db() as s:
    items = datasets.list_datasets(actor, s)
if not items:
    st.info("No datasets yet: upload one above.")
    st.stop()

st.subheader("Your datasets")
st.dataframe(
    [
        {
            "name": d.name,
            "file": d.original_filename,
            "format": d.file_format,
            "layout": d.layout,
            "rows": d.rows,
            "valid": d.valid_rows,
            "size": w.size(d.size_bytes),
            "added": w.when(d.created_at),
        }
        for d in items
    ],
    hide_index=True,
    width="stretch",
    column_config={"layout": st.column_config.TextColumn("layout", width="medium")},
)
by_id = {d.id: d for d in items}
if st.session_state["datasets.selected"] not in by_id:
    st.session_state["datasets.selected"] = items[0].id
ds_id = st.selectbox(
    "Dataset", list(by_id), format_func=lambda i: by_id[i].name, key="datasets.selected"
)
ds = by_id[ds_id]

tab_stats, tab_preview, tab_manage = st.tabs(["Statistics", "Preview", "Rename or delete"])
with tab_stats, section("the statistics"):
    ui.summary(ds)
    ui.histogram(ds, int(max_length))
with tab_preview, section("the preview"):
    ui.preview(ds, model)
with tab_manage, section("rename and delete"):
    new_name = st.text_input("New name", value=ds.name, key=f"datasets.rename.{ds.id}")
    if st.button("Rename", key="datasets.rename"):
        try:
            with session.db() as s:
                datasets.rename_dataset(actor, s, ds.id, new_name)
            st.rerun()
        except BrightRunError as e:
            w.show_error(e)
    if st.button("Delete dataset", key="datasets.delete"):
        st.session_state["datasets.confirm_delete"] = ds.id
        st.rerun()
    if w.confirm("datasets.confirm_delete", f"dataset {ds.name}", ds.id):
        try:
            with session.db() as s:
                datasets.delete_dataset(actor, s, session.store(), ds.id)
            st.session_state["datasets.confirm_delete"] = None
            st.rerun()
        except BrightRunError as e:
            w.show_error(e)
