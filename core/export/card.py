"""An exported version's record (`brightrun.json`) and its model card (`README.md`,
`loss_curve.svg`): built from the stored (redacted) spec and the database, never holding a
secret or a signed URL."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from core import adapters
from core.db import repo
from core.db.tables import AdapterVersion, Dataset, Job
from core.evaluate import METRIC_LABELS, METRICS
from core.users import Actor

EXPORT_VERSION = 1


def _dataset_summary(ds: Dataset | None) -> dict[str, Any] | None:
    if ds is None:
        return None
    stats = ds.stats or {}
    tokens = stats.get("tokens") or {}
    split = stats.get("split") or {}
    return {
        "id": ds.id,
        "name": ds.name,
        "layout": ds.layout,
        "rows": ds.rows,
        "valid_rows": ds.valid_rows,
        "train_rows": split.get("train_rows"),
        "eval_rows": split.get("eval_rows"),
        "duplicates": stats.get("duplicates"),
        "tokens": {
            k: tokens.get(k)
            for k in ("per_row", "total", "loss_share", "truncated_rows", "max_length", "model")
        }
        if tokens.get("available")
        else None,
    }


def version_record(
    actor: Actor, session: Any, v: AdapterVersion, training_record: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The `brightrun.json` of an exported version (no secrets, no signed URLs)."""
    name = adapters.adapter_name_of(session, v)
    chain = repo.version_lineage(actor, session, v.id)
    job = session.get(Job, v.job_id) if v.job_id else None
    ds = session.get(Dataset, v.dataset_id) if v.dataset_id else None
    if ds is not None and ds.owner_id != actor.user_id:
        ds = None
    return {
        "brightrun_export_version": EXPORT_VERSION,
        "adapter": name,
        "version": v.version,
        "label": adapters.label(name, v),
        "version_id": v.id,
        "checkpoint_step": v.step if v.is_checkpoint else None,
        "base_model": v.base_model,
        "lineage": [
            {"version_id": x.id, "label": adapters.label(adapters.adapter_name_of(session, x), x)}
            for x in chain[1:]
        ],
        "job": {
            "id": job.id,
            "gpu_type": job.gpu_type,
            "cost_usd": round(job.cost_usd or 0.0, 6),
            "status": job.status,
            "stop_reason": job.stop_reason,
        }
        if job is not None
        else None,
        "dataset": _dataset_summary(ds),
        "settings": v.settings or {},
        "final_loss": v.final_loss,
        "eval_loss": v.eval_loss,
        "loss_curve": v.loss_curve or [],
        "evaluation": v.eval_scores,
        "created_at": v.created_at.isoformat() if v.created_at else None,
        "training_record": dict(training_record) if training_record else None,
    }


# --------------------------------------------------------------------------- model card


def loss_curve_svg(curve: Sequence[Sequence[float]], width: int = 640, height: int = 240) -> str:
    """The training loss over steps as a small standalone SVG (no plotting library)."""
    pts = [
        (float(s), float(loss))
        for s, loss in curve
        if isinstance(loss, int | float) and math.isfinite(loss)
    ]
    pad = 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    if pts:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        sx = (width - 2 * pad) / ((x1 - x0) or 1.0)
        sy = (height - 2 * pad) / ((y1 - y0) or 1.0)
        coords = " ".join(
            f"{pad + (x - x0) * sx:.1f},{height - pad - (y - y0) * sy:.1f}" for x, y in pts
        )
        out += [
            f'<polyline fill="none" stroke="#4f46e5" stroke-width="2" points="{coords}"/>',
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#94a3b8"/>',
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#94a3b8"/>',
            f'<text x="{pad}" y="{height - pad + 16}">step {x0:g}</text>',
            f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end">step {x1:g}</text>',
            f'<text x="{pad - 4}" y="{pad}" text-anchor="end">{y1:.3g}</text>',
            f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end">{y0:.3g}</text>',
            f'<text x="{width / 2}" y="{pad - 14}" text-anchor="middle">training loss</text>',
        ]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value is not None else "–"


def _card_header(record: Mapping[str, Any]) -> list[str]:
    q = (record.get("settings") or {}).get("quantization")
    tags = ["brightrun", "peft", "lora"] + (["qlora"] if q == "nf4" else [])
    lines = [
        "---",
        f"base_model: {json.dumps(record['base_model'])}",
        "library_name: peft",
        "pipeline_tag: text-generation",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "---",
        "",
        f"# {record['label']}",
        "",
        f"A LoRA adapter for `{record['base_model']}`, trained with BrightRun"
        + (f" (job `{record['job']['id']}`)." if record.get("job") else "."),
        "",
    ]
    if record.get("lineage"):
        chain = " → ".join(x["label"] for x in reversed(record["lineage"]))
        lines += [f"Continued from {chain}.", ""]
    return lines


def _card_data(ds: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Training data", ""]
    if not ds:
        return lines + ["Not recorded."]
    lines += [
        f"Dataset **{_md_cell(ds['name'])}** ({ds['layout']}): {ds['valid_rows']} valid rows of {ds['rows']}"
        + (
            f", {ds['train_rows']} for training and {ds['eval_rows']} held out for evaluation"
            if ds.get("eval_rows")
            else ""
        )
        + "."
    ]
    tok = ds.get("tokens") or {}
    per = tok.get("per_row") or {}
    if per:
        lines += [
            "",
            "| tokens per row | mean | median | p95 | max |",
            "|---|---|---|---|---|",
            f"| with the chat template | {per.get('mean')} | {per.get('median')} | {per.get('p95')} | {per.get('max')} |",
        ]
        extra = []
        if tok.get("loss_share") is not None:
            extra.append(f"{tok['loss_share']:.1%} of tokens carry the loss")
        if tok.get("truncated_rows") is not None:
            extra.append(
                f"{tok['truncated_rows']} rows truncated at {tok.get('max_length')} tokens"
            )
        if ds.get("duplicates"):
            extra.append(f"{ds['duplicates']} duplicate rows")
        if extra:
            lines += ["", "; ".join(extra) + "."]
    return lines


def _card_settings(s: Mapping[str, Any]) -> list[str]:
    lora, t, q = s.get("lora") or {}, s.get("training") or {}, s.get("quantization")
    lines = ["", "## Settings", "", "| setting | value |", "|---|---|"]
    rows = [
        ("quantization", q),
        ("LoRA rank", lora.get("r")),
        ("LoRA alpha", lora.get("alpha")),
        ("LoRA dropout", lora.get("dropout")),
        ("target modules", lora.get("target_modules")),
        ("epochs", t.get("epochs")),
        ("max steps", t.get("max_steps")),
        ("learning rate", t.get("learning_rate")),
        ("scheduler", t.get("lr_scheduler")),
        ("micro-batch", t.get("micro_batch_size")),
        ("gradient accumulation", t.get("grad_accum")),
        ("max length", t.get("max_length")),
        ("packing", t.get("packing")),
    ]
    return lines + [f"| {k} | {_md_cell(v)} |" for k, v in rows if v is not None]


def _card_results(record: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Loss", ""]
    if record.get("loss_curve"):
        lines += ["![Training loss](loss_curve.svg)", ""]
    lines += [
        f"Final training loss: {_fmt(record.get('final_loss'))}; eval loss: {_fmt(record.get('eval_loss'))}."
    ]
    ev = record.get("evaluation") or {}
    lines += ["", "## Evaluation", ""]
    if ev.get("status") != "done":
        return lines + ["Not evaluated" + (f" ({ev['status']})" if ev.get("status") else "") + "."]
    lines += [
        f"{ev['rows']} rows of the eval split, answered greedily by the adapter and by the base "
        f"model (`{ev.get('server_base')}`), scored against the references:",
        "",
        "| metric | adapter | base | difference |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {METRIC_LABELS.get(m, m.replace('_', ' '))} | {ev['adapter'][m]:.3f} "
        f"| {ev['base'][m]:.3f} | {ev['delta'][m]:+.3f} |"
        for m in ev.get("metrics") or METRICS
    ]
    judge = ev.get("judge")
    if judge and judge.get("win_rate") is not None:
        lines += [
            "",
            f"LLM judge (`{judge['model']}`): the adapter's answer was preferred in "
            f"{judge['win_rate']:.0%} of comparisons ({judge['wins']} wins, {judge['ties']} ties, "
            f"{judge['losses']} losses).",
        ]
    return lines


def model_card(record: Mapping[str, Any]) -> str:
    """The generated `README.md` (Hugging Face model card with YAML metadata)."""
    lines = _card_header(record) + _card_data(record.get("dataset"))
    lines += _card_settings(record.get("settings") or {}) + _card_results(record)
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"base = AutoModelForCausalLM.from_pretrained({record['base_model']!r})",
        'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
        f"tokenizer = AutoTokenizer.from_pretrained({record['base_model']!r})",
        "```",
        "",
    ]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) else "–"
