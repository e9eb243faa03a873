"""Datasets page widgets: the upload (with progress, its limit, and what to do with bad
rows), the token-length histogram, and the preview as the model's chat template sees it.
Everything taken from the file is shown as text, never rendered."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from components import charts, session
from components import widgets as w
from core import datasets, queries
from core.errors import BrightRunError, DatasetUnusable

FILE_TYPES = ["jsonl", "json", "csv", "tsv", "parquet", "txt"]


def upload(model: str, max_length: int) -> None:
    """Choose a file, name it, add it; on bad rows offer to drop them or re-upload."""
    settings = session.settings()
    limit = settings.max_upload_mb
    st.caption(
        f"JSONL, JSON, CSV/TSV or Parquet, up to **{limit} MB** per file (the browser holds an upload "
        "in memory). For a larger file run `brightrun dataset add FILE` on the server."
    )
    nonce = st.session_state["datasets.upload_nonce"]
    f = st.file_uploader(
        "Dataset file", type=FILE_TYPES, max_upload_size=limit, key=f"datasets.file.{nonce}"
    )
    if f is None:
        st.session_state["datasets.rejected"] = None
        return
    if st.session_state["datasets.upload_of"] != f.file_id:  # another file: its name, no report
        st.session_state["datasets.upload_of"] = f.file_id
        st.session_state[f"datasets.name.{nonce}"] = datasets.name_from_filename(f.name)
        st.session_state["datasets.rejected"] = None
    name = st.text_input("Name", key=f"datasets.name.{nonce}")
    if st.button("Add dataset", type="primary", key="datasets.add"):
        _add(f, name, model, max_length, "reject")
    rejected = st.session_state["datasets.rejected"]
    if rejected:
        rep = rejected["report"]
        w.show_error(rejected["message"])
        w.problems_table(rep.get("problem_examples", []), rep.get("problems", {}))
        if rep.get("valid_rows"):
            if st.button(
                f"Drop the {rep['invalid_rows']} bad row(s) and keep {rep['valid_rows']}",
                key="datasets.drop",
            ):
                _add(f, name, model, max_length, "drop")
            st.caption("…or fix the file and upload it again.")


def _add(f: Any, name: str, model: str, max_length: int, on_bad_rows: str) -> None:
    settings = session.settings()
    bar = st.progress(0.0, text="Saving the upload…")
    with tempfile.TemporaryDirectory(prefix="brightrun-upload-") as tmp:
        suffix = Path(f.name).suffix.lower()  # the format detector takes the extension as a hint
        path = Path(tmp) / ("upload" + (suffix if suffix.lstrip(".") in FILE_TYPES else ""))
        with open(path, "wb") as out:
            size = f.size or 1
            for i, chunk in enumerate(iter(lambda: f.read(1 << 20), b"")):
                out.write(chunk)
                bar.progress(min(0.3, 0.3 * (i + 1) * (1 << 20) / size), text="Saving the upload…")
        bar.progress(0.35, text="Reading, checking and measuring every row…")
        try:
            tok = datasets.load_tokenizer(model, settings.data_dir / "models")
            with session.db() as s:
                ds, report = datasets.add_dataset(
                    session.actor(),
                    s,
                    session.store(),
                    path,
                    name,
                    original_filename=f.name,
                    tokenizer=tok,
                    max_length=max_length,
                    on_bad_rows=on_bad_rows,
                    max_bytes=settings.max_upload_mb * 1024 * 1024,
                )
        except DatasetUnusable as e:
            bar.empty()
            rep = e.report.to_dict() if e.report is not None else {}
            st.session_state["datasets.rejected"] = {"message": str(e), "report": rep}
            return
        except BrightRunError as e:
            bar.empty()
            w.show_error(e)
            return
    bar.progress(1.0, text="Stored")
    st.session_state["datasets.rejected"] = None
    st.session_state["datasets.selected"] = ds.id
    st.session_state["datasets.upload_nonce"] += 1
    st.toast(f"Added {report.valid_rows} rows as {w.plain(ds.name)}")
    st.rerun()


def summary(ds: Any) -> None:
    stats = ds.stats or {}
    c = st.columns([1, 3, 1, 1, 1.3])  # a layout's name is read whole ("preference_sharegpt")
    c[0].metric("Format", ds.file_format)
    c[1].metric("Layout", ds.layout)
    c[2].metric("Valid rows", f"{ds.valid_rows:,}", help=f"of {ds.rows:,} read")
    c[3].metric("Duplicates", f"{stats.get('duplicates', 0):,}")
    split = stats.get("split") or {}
    c[4].metric(
        "Train / eval", f"{split.get('train_rows', ds.valid_rows)} / {split.get('eval_rows', 0)}"
    )
    if stats.get("problems"):
        st.markdown(f"**Dropped rows** ({ds.rows - ds.valid_rows}), by kind:")
        w.problems_table(stats.get("problem_examples", []), stats["problems"])


def histogram(ds: Any, max_length: int) -> None:
    tokens = (ds.stats or {}).get("tokens") or {}
    if not tokens.get("available"):
        st.info(
            f"Token statistics are not available: {w.plain(tokens.get('reason') or 'not measured')}"
        )
        return
    if ds.layout == "text":  # long documents are split, not cut: measure those instead
        tokens = {**tokens, "truncated_rows": tokens.get("split_rows")}
    share = queries.truncated_share(tokens, max_length) or 0.0
    h = tokens["histogram"]
    over = "split into windows" if ds.layout == "text" else "truncated"
    st.plotly_chart(
        charts.token_histogram(h["edges"], h["counts"], max_length, share, over),
        key="datasets.hist",
    )
    pr = tokens["per_row"]
    sampled = f" (first {tokens['measured_rows']:,} rows)" if tokens.get("sampled") else ""
    long_rows = (
        f"**{share:.1%}** of rows are longer and are split into windows (no token lost)"
        if ds.layout == "text"
        else f"**{share:.1%}** of rows are truncated"
    )
    st.caption(
        f"Measured with {w.plain(tokens.get('model'))}'s tokenizer{sampled}: median "
        f"{pr['median']:.0f}, p95 {pr['p95']:.0f}, max {pr['max']} tokens per row; {tokens['loss_share']:.0%} "
        f"of tokens carry loss. At max length {max_length}, {long_rows}."
    )
    agent_caption(ds.stats or {}, tokens)


def agent_caption(stats: dict[str, Any], tokens: dict[str, Any]) -> None:
    """Tools, calls and reasoning of a tool-calling or reasoning dataset (nothing for others)."""
    a = stats.get("agent") or {}
    if not (a.get("rows_with_tools") or a.get("tool_calls") or a.get("rows_with_reasoning")):
        return
    parts = [
        f"{a.get('rows_with_tools', 0):,} rows define tools",
        f"{a.get('calls_per_row', 0):.2f} tool calls per row "
        f"({a.get('rows_with_parallel_calls', 0):,} rows with parallel calls)",
        f"{a.get('rows_with_reasoning', 0):,} rows reason",
    ]
    if tokens.get("reasoning_share") is not None:
        parts.append(
            f"{tokens['reasoning_share']:.0%} of tokens are reasoning; without training on it "
            f"{tokens.get('loss_share_without_reasoning', 0):.0%} of tokens carry loss"
        )
    st.caption("Agent data: " + "; ".join(parts) + ".")


def preview(ds: Any, model: str) -> None:
    settings = session.settings()
    with session.db() as s:
        rows = datasets.preview_rows(session.actor(), s, session.store(), ds.id, n=5)
    if not rows:
        st.caption("No rows to preview.")
        return
    i = st.number_input("Row", 1, len(rows), 1, key="datasets.preview_row") - 1
    bubbles, raw = st.columns(2)
    with bubbles:
        w.chat_bubbles(rows[i])
    with raw:
        view = queries.render_with_template(settings, model, rows[i])
        st.caption(f"As {w.plain(model)}'s chat template renders it (what training tokenizes):")
        if view.text is None:
            st.info(w.plain(view.reason))
        elif view.rejected is None:
            st.code(view.text, language=None, wrap_lines=True)
        else:  # a preference pair: both sides, each the prompt and its answer
            st.caption("Prompt + chosen answer")
            st.code(view.text, language=None, wrap_lines=True)
            st.caption("Prompt + rejected answer")
            st.code(view.rejected, language=None, wrap_lines=True)
