"""Taking an adapter version elsewhere: a zip, the Hugging Face Hub, or merged weights.

- `export_zip(actor, session, store, ref)` -> (file name, bytes). The zip holds the PEFT
  files (`adapter_config.json`, `adapter_model.safetensors`), `brightrun.json` (the version's
  record: adapter, number, base model, lineage, job and cost, dataset and its statistics,
  settings, losses and loss curve, evaluation, and the worker's own training record when it
  left one) and a generated model card `README.md` (base model, data statistics, settings,
  loss curve as `loss_curve.svg`, evaluation, lineage, usage). The files come from storage,
  else from the version's folder on the volume when it is visible here.
- `push_to_hub(actor, settings, ref, repo_id)` uploads the same folder to a model repo with
  `huggingface_hub` (`create_repo(exist_ok=True)` then `upload_folder`, one commit). The
  token is `settings.hf_token`, handed to the `HfApi` client only: it is never written
  into a file, the database or a log. The repo is recorded on the version (`hub_repo`).
- `plan_merge(facts, ...)` is the planner for a `merge` job: memory (the base in the merge
  dtype, the adapter, the largest weight's fp32 delta, CUDA context and allocator headroom)
  with a fit verdict per GPU, disk, time (cold start, save, upload) and cost ranges.
  `merge(actor, settings, ref, ...)` launches the job (`trainer.merge`): the merged
  safetensors shards go to storage under `<owner>/jobs/<job id>/merged/` (upload URLs are
  signed for every name the worker may write), and to `hub_repo` when given, pushed by the
  worker with its own HF_TOKEN. `merged_files` lists what a completed merge stored.

Nothing here puts a secret or a signed URL into a file: `brightrun.json` is built from the
stored (redacted) spec and the database. Errors: `NotFound` (no such version, or its files
are gone), `InvalidInput` (a bad repo id, HF_TOKEN not set), `ExportFailed` (the Hub
refused or could not be reached; the message never contains the token).
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import adapters, repo
from core.errors import BrightRunError, InvalidInput, NotFound
from core.models import AdapterVersion, Dataset, Job
from core.settings import Settings
from core.users import Actor

__all__ = [
    "ExportFailed",
    "version_record",
    "model_card",
    "loss_curve_svg",
    "build_folder",
    "export_zip",
    "HubPush",
    "push_to_hub",
    "MergePlan",
    "plan_merge",
    "merge",
    "merged_prefix",
    "merged_files",
]

EXPORT_VERSION = 1
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class ExportFailed(BrightRunError):
    """The Hugging Face Hub refused the upload or could not be reached."""


# --------------------------------------------------------------------------- the record


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
        "tokens": {k: tokens.get(k) for k in ("per_row", "total", "loss_share", "truncated_rows", "max_length", "model")}
        if tokens.get("available") else None,
    }  # fmt: skip


def version_record(actor: Actor, session: Any, v: AdapterVersion, training_record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `brightrun.json` of an exported version (no secrets, no signed URLs)."""
    name = adapters._adapter_name(session, v)
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
        "lineage": [{"version_id": x.id, "label": adapters.label(adapters._adapter_name(session, x), x)} for x in chain[1:]],
        "job": {"id": job.id, "gpu_type": job.gpu_type, "cost_usd": round(job.cost_usd or 0.0, 6),
                "status": job.status, "stop_reason": job.stop_reason} if job is not None else None,
        "dataset": _dataset_summary(ds),
        "settings": v.settings or {},
        "final_loss": v.final_loss,
        "eval_loss": v.eval_loss,
        "loss_curve": v.loss_curve or [],
        "evaluation": v.eval_scores,
        "created_at": v.created_at.isoformat() if v.created_at else None,
        "training_record": dict(training_record) if training_record else None,
    }  # fmt: skip


# --------------------------------------------------------------------------- model card


def loss_curve_svg(curve: Sequence[Sequence[float]], width: int = 640, height: int = 240) -> str:
    """The training loss over steps as a small standalone SVG (no plotting library)."""
    pts = [(float(s), float(loss)) for s, loss in curve if isinstance(loss, int | float) and math.isfinite(loss)]
    pad = 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>']  # fmt: skip
    if pts:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        sx = (width - 2 * pad) / ((x1 - x0) or 1.0)
        sy = (height - 2 * pad) / ((y1 - y0) or 1.0)
        coords = " ".join(f"{pad + (x - x0) * sx:.1f},{height - pad - (y - y0) * sy:.1f}" for x, y in pts)
        out += [
            f'<polyline fill="none" stroke="#4f46e5" stroke-width="2" points="{coords}"/>',
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#94a3b8"/>',
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#94a3b8"/>',
            f'<text x="{pad}" y="{height - pad + 16}">step {x0:g}</text>',
            f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end">step {x1:g}</text>',
            f'<text x="{pad - 4}" y="{pad}" text-anchor="end">{y1:.3g}</text>',
            f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end">{y0:.3g}</text>',
            f'<text x="{width / 2}" y="{pad - 14}" text-anchor="middle">training loss</text>',
        ]  # fmt: skip
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value is not None else "–"


def model_card(record: Mapping[str, Any]) -> str:
    """The generated `README.md` (Hugging Face model card with YAML metadata)."""
    s = record.get("settings") or {}
    lora, t, q = s.get("lora") or {}, s.get("training") or {}, s.get("quantization")
    tags = ["brightrun", "peft", "lora"] + (["qlora"] if q == "nf4" else [])
    lines = ["---", f"base_model: {json.dumps(record['base_model'])}", "library_name: peft",
             "pipeline_tag: text-generation", "tags:", *(f"- {tag}" for tag in tags), "---", "",
             f"# {record['label']}", "",
             f"A LoRA adapter for `{record['base_model']}`, trained with BrightRun"
             + (f" (job `{record['job']['id']}`)." if record.get("job") else "."), ""]  # fmt: skip
    if record.get("lineage"):
        chain = " → ".join(x["label"] for x in reversed(record["lineage"]))
        lines += [f"Continued from {chain}.", ""]
    ds = record.get("dataset")
    lines += ["## Training data", ""]
    if ds:
        lines += [f"Dataset **{_md_cell(ds['name'])}** ({ds['layout']}): {ds['valid_rows']} valid rows of {ds['rows']}"
                  + (f", {ds['train_rows']} for training and {ds['eval_rows']} held out for evaluation"
                     if ds.get("eval_rows") else "") + "."]  # fmt: skip
        tok = ds.get("tokens") or {}
        per = tok.get("per_row") or {}
        if per:
            lines += ["", "| tokens per row | mean | median | p95 | max |", "|---|---|---|---|---|",
                      f"| with the chat template | {per.get('mean')} | {per.get('median')} | {per.get('p95')} | {per.get('max')} |"]  # fmt: skip
            extra = []
            if tok.get("loss_share") is not None:
                extra.append(f"{tok['loss_share']:.1%} of tokens carry the loss")
            if tok.get("truncated_rows") is not None:
                extra.append(f"{tok['truncated_rows']} rows truncated at {tok.get('max_length')} tokens")
            if ds.get("duplicates"):
                extra.append(f"{ds['duplicates']} duplicate rows")
            if extra:
                lines += ["", "; ".join(extra) + "."]
    else:
        lines += ["Not recorded."]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    rows = [("quantization", q), ("LoRA rank", lora.get("r")), ("LoRA alpha", lora.get("alpha")),
            ("LoRA dropout", lora.get("dropout")), ("target modules", lora.get("target_modules")),
            ("epochs", t.get("epochs")), ("max steps", t.get("max_steps")), ("learning rate", t.get("learning_rate")),
            ("scheduler", t.get("lr_scheduler")), ("micro-batch", t.get("micro_batch_size")),
            ("gradient accumulation", t.get("grad_accum")), ("max length", t.get("max_length")),
            ("packing", t.get("packing"))]  # fmt: skip
    lines += [f"| {k} | {_md_cell(v)} |" for k, v in rows if v is not None]
    lines += ["", "## Loss", ""]
    if record.get("loss_curve"):
        lines += ["![Training loss](loss_curve.svg)", ""]
    lines += [f"Final training loss: {_fmt(record.get('final_loss'))}; eval loss: {_fmt(record.get('eval_loss'))}."]
    ev = record.get("evaluation") or {}
    lines += ["", "## Evaluation", ""]
    if ev.get("status") == "done":
        from core.evaluate import METRIC_LABELS, METRICS

        lines += [f"{ev['rows']} rows of the eval split, answered greedily by the adapter and by the base "
                  f"model (`{ev.get('server_base')}`), scored against the references:", "",
                  "| metric | adapter | base | difference |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {METRIC_LABELS[m]} | {ev['adapter'][m]:.3f} | {ev['base'][m]:.3f} | {ev['delta'][m]:+.3f} |" for m in METRICS]
        judge = ev.get("judge")
        if judge and judge.get("win_rate") is not None:
            lines += ["", f"LLM judge (`{judge['model']}`): the adapter's answer was preferred in "
                      f"{judge['win_rate']:.0%} of comparisons ({judge['wins']} wins, {judge['ties']} ties, "
                      f"{judge['losses']} losses)."]  # fmt: skip
    else:
        lines += ["Not evaluated" + (f" ({ev['status']})" if ev.get("status") else "") + "."]
    lines += ["", "## Usage", "", "```python", "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f"base = AutoModelForCausalLM.from_pretrained({record['base_model']!r})",
              "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")",
              f"tokenizer = AutoTokenizer.from_pretrained({record['base_model']!r})", "```", ""]  # fmt: skip
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) else "–"


# --------------------------------------------------------------------------- the folder


def _fetch_files(v: AdapterVersion, store: Any, dest: Path) -> None:
    if v.storage_prefix and store is not None:
        blobs = store.list(v.storage_bucket, v.storage_prefix)
        for b in blobs:
            store.download_to(v.storage_bucket, b.key, dest / b.key[len(v.storage_prefix):].lstrip("/"))
        if blobs:
            return
    folder = Path(v.volume_path) if v.volume_path else None
    if folder is not None and folder.is_dir():
        for name in (*adapters.PEFT_FILES, "brightrun.json"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, dest / name)


def build_folder(actor: Actor, session: Any, store: Any, ref: str, dest: Path) -> tuple[AdapterVersion, dict[str, Any]]:
    """Write the export of version `ref` into `dest` (see the module docstring)."""
    v = adapters.resolve(actor, session, ref)
    dest.mkdir(parents=True, exist_ok=True)
    _fetch_files(v, store, dest)
    missing = [f for f in adapters.PEFT_FILES if not (dest / f).is_file()]
    if missing:
        raise NotFound(f"the files of {ref!r} are neither in storage nor in a folder visible here (missing {missing})")
    training_record = None
    if (dest / "brightrun.json").is_file():
        try:
            training_record = json.loads((dest / "brightrun.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            training_record = None
    record = version_record(actor, session, v, training_record)
    (dest / "brightrun.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    (dest / "README.md").write_text(model_card(record), encoding="utf-8")
    if record["loss_curve"]:
        (dest / "loss_curve.svg").write_text(loss_curve_svg(record["loss_curve"]), encoding="utf-8")
    return v, record


def export_zip(actor: Actor, session: Any, store: Any, ref: str) -> tuple[str, bytes]:
    """(file name, zip bytes) of version `ref`."""
    with tempfile.TemporaryDirectory(prefix="brightrun-export-") as tmp:
        _, record = build_folder(actor, session, store, ref, Path(tmp))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(Path(tmp).iterdir()):
                zf.write(p, p.name)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", record["label"]).strip("-")
    return f"{slug}.zip", buf.getvalue()


# --------------------------------------------------------------------------- the hub


@dataclass(frozen=True)
class HubPush:
    repo_id: str
    url: str
    files: list[str]


def push_to_hub(
    actor: Actor,
    settings: Settings,
    ref: str,
    repo_id: str,
    *,
    private: bool = True,
    store: Any = None,
    api_factory: Callable[[str], Any] | None = None,
) -> HubPush:
    """Upload version `ref` (PEFT files, brightrun.json, model card) to the Hub model repo
    `repo_id` (created if missing). `api_factory(token)` builds the client (default:
    `huggingface_hub.HfApi(token=token)`)."""
    from core.db import session_scope
    from core.storage import make_blob_store

    if not _REPO_ID.match(repo_id or ""):
        raise InvalidInput(f"Hub repo {repo_id!r} must look like 'your-name/model-name'")
    token = settings.hf_token.get_secret_value()
    if not token:
        raise InvalidInput("HF_TOKEN is not set: add a Hugging Face token with write access to the settings")
    if api_factory is None:
        from huggingface_hub import HfApi

        def api_factory(t: str) -> Any:
            return HfApi(token=t)

    from huggingface_hub.errors import HfHubHTTPError

    store = store or make_blob_store(settings)
    with tempfile.TemporaryDirectory(prefix="brightrun-hub-") as tmp, session_scope(settings) as s:
        v, record = build_folder(actor, s, store, ref, Path(tmp))
        files = sorted(p.name for p in Path(tmp).iterdir())
        api = api_factory(token)
        try:
            created = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=tmp,
                              commit_message=f"{record['label']} from BrightRun")  # fmt: skip
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "no answer"
            raise ExportFailed(
                f"the Hugging Face Hub refused the push to {repo_id} (HTTP {status}); check that "
                "HF_TOKEN has write access to that namespace"
            ) from None
        except OSError as e:
            raise ExportFailed(f"the Hugging Face Hub could not be reached: {type(e).__name__}") from None
        except ValueError as e:  # the Hub's check of the model card's metadata
            raise ExportFailed(f"the Hugging Face Hub refused the model card: {e}") from None
        repo.update_version(actor, s, v.id, hub_repo=repo_id)
    url = str(getattr(created, "url", "") or f"https://huggingface.co/{repo_id}")
    return HubPush(repo_id=repo_id, url=url, files=files)


# --------------------------------------------------------------------------- merge

MERGE_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
SAVE_BYTES_PER_S = (2.0e9, 0.5e9)  # writing shards to local disk, fast-slow
UPLOAD_BYTES_PER_S = (1.0e9, 0.1e9)  # to storage or the Hub, fast-slow


@dataclass(frozen=True)
class MergePlan:
    model: str
    dtype: str
    weights_bytes: int
    adapter_bytes: int
    delta_bytes: int  # the largest weight's fp32 LoRA delta while it is merged
    need_bytes: int  # peak device memory
    disk_bytes: int  # the cached base plus the merged copy
    verdicts: list[dict[str, Any]]  # per GPU: gpu, name, memory_bytes, verdict
    seconds_low: float
    seconds_high: float
    costs: list[dict[str, Any]]  # per GPU: gpu, usd_low, usd_high

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def plan_merge(
    facts: Any,
    *,
    gpus: Sequence[str],
    dtype: str = "bfloat16",
    adapter_bytes: int = 0,
    tier: str = "flex",
    price_overrides: Mapping[str, float] | None = None,
) -> MergePlan:
    """Memory, disk, time and cost of merging an adapter into `facts`' model (see the module
    docstring). Time: cold start (container plus reading the base) + saving the merged
    shards + uploading them; the merge itself is one addition per adapted weight."""
    from core import catalog, costs, estimate

    per = MERGE_DTYPE_BYTES[dtype]
    weights = int(facts.params.total * per)
    largest = max((w.numel for w in catalog.weights(facts) if w.role in ("linear", "routed_experts")), default=0)
    delta = largest * 4
    raw = weights + adapter_bytes + delta
    need = int(estimate.CUDA_CONTEXT_BYTES + raw * (1 + estimate.ALLOCATOR_HEADROOM))
    verdicts = []
    for g in gpus:
        gt = costs.gpu_type(g)
        verdicts.append({"gpu": g, "name": gt.name, "memory_bytes": estimate.device_bytes(gt),
                         "verdict": estimate.verdict_for(need, gt)})  # fmt: skip
    cold_lo, cold_hi = estimate.cold_start_s(facts)
    lo = cold_lo + weights / SAVE_BYTES_PER_S[0] + weights / UPLOAD_BYTES_PER_S[0]
    hi = cold_hi + weights / SAVE_BYTES_PER_S[1] + weights / UPLOAD_BYTES_PER_S[1]
    cost_rows = []
    for g in gpus:
        rate = costs.rate_per_second(g, tier, dict(price_overrides or {}))  # type: ignore[arg-type]
        cost_rows.append({"gpu": g, "usd_low": round(lo * rate, 4), "usd_high": round(hi * rate, 4)})
    return MergePlan(
        model=facts.id, dtype=dtype, weights_bytes=weights, adapter_bytes=adapter_bytes, delta_bytes=delta,
        need_bytes=need, disk_bytes=facts.params.total * 2 + weights, verdicts=verdicts,
        seconds_low=round(lo, 1), seconds_high=round(hi, 1), costs=cost_rows,
    )  # fmt: skip


def merged_prefix(owner_id: str, job_id: str) -> str:
    from core.storage import job_prefix

    return job_prefix(owner_id, job_id) + "merged/"


def merge(
    actor: Actor,
    settings: Settings,
    ref: str,
    *,
    dtype: str = "bfloat16",
    max_shard_size_mb: float = 5000.0,
    hub_repo: str | None = None,
    hub_private: bool = True,
    to_storage: bool = True,
    budget_usd: float | None = None,
    gpu_type: str | None = None,
    client: Any = None,
    store: Any = None,
) -> tuple[Any, MergePlan | None]:
    """Launch a `merge` job for version `ref`; returns (job, the plan it was checked with).
    Refused (`InvalidInput`) when the planner says the base does not fit the GPU, or when
    the merged files would have nowhere to go."""
    from pydantic import ValidationError

    from core import actions, catalog, jobs
    from core.db import session_scope
    from core.storage import DOWNLOAD_URL_TTL_S, adapter_key, make_blob_store
    from trainer.shared.files import upload_names
    from trainer.shared.spec import JobSpec

    if hub_repo is not None and not _REPO_ID.match(hub_repo):
        raise InvalidInput(f"Hub repo {hub_repo!r} must look like 'your-name/model-name'")
    store = store or make_blob_store(settings)
    with session_scope(settings) as s:
        v = adapters.resolve(actor, s, ref)
        name, vid, base = adapters._adapter_name(s, v), v.id, v.base_model
        stored = bool(v.storage_prefix) and store.exists("adapters", v.storage_prefix + "adapter_model.safetensors")
        folder, size, number = v.volume_path, v.size_bytes or 0, v.version
        label = adapters.label(name, v)
    if not stored and not folder:
        raise InvalidInput(f"{label} has neither stored files nor a folder on the volume to merge")
    pricing = jobs.pricing_for(settings, gpu_type)
    plan = None
    try:
        facts = catalog.describe(base, local_models_dir=settings.data_dir / "models")
    except catalog.ModelNotDescribable:
        facts = None
    if facts is not None:
        plan = plan_merge(facts, gpus=[pricing.priced_as], dtype=dtype, adapter_bytes=size,
                          tier=settings.price_tier, price_overrides=settings.gpu_prices)  # fmt: skip
        if pricing.gpu_type != jobs.LOCAL_GPU and plan.verdicts[0]["verdict"] == "does_not_fit":
            raise jobs.PlanRefused(
                f"merging {base} in {dtype} needs about {plan.need_bytes / 2**30:.1f} GiB; it does not "
                f"fit {plan.verdicts[0]['name']}: pick a GPU with more memory"
            )
    if to_storage and facts is None:
        raise InvalidInput(f"the planner cannot size {base}'s merged files; push them to the Hub with --hub-repo instead")
    job_id = repo.new_id("job")
    merge_section: dict[str, Any] = {"dtype": dtype, "max_shard_size_mb": max_shard_size_mb,
                                     "hub_repo": hub_repo, "hub_private": hub_private}  # fmt: skip
    if stored:
        merge_section["adapter_urls"] = {f: "https://signed-url.invalid/" + f for f in adapters.PEFT_FILES}
    else:
        merge_section["adapter_path"] = folder
    names = upload_names(plan.weights_bytes, int(max_shard_size_mb * 1e6)) if (to_storage and plan) else []
    try:
        spec = JobSpec(
            job_id=job_id, action="merge", model={"name_or_path": jobs.worker_model(settings, base, pricing)},
            quantization="none", merge=merge_section, device=actions.device_for(settings, pricing),
            output={"adapter_name": f"{name}-v{number or 0}-merged"[:128],
                    "upload_urls": {n: "https://signed-url.invalid/" + n for n in names}},
        )  # fmt: skip
    except ValidationError as e:
        raise InvalidInput(f"invalid merge settings: {jobs._spec_errors(e)}") from None
    owner = actor.user_id
    prefix = merged_prefix(owner, job_id)

    def sign(payload: dict[str, Any], st: Any, ttl: int) -> dict[str, Any]:
        if stored:
            payload["merge"]["adapter_urls"] = {
                f: st.signed_download_url("adapters", adapter_key(owner, vid, f), DOWNLOAD_URL_TTL_S)
                for f in adapters.PEFT_FILES
            }
        payload["output"]["upload_urls"] = {n: st.signed_upload_url("adapters", prefix + n, ttl) for n in names}
        return payload

    job = actions.send_action(actor, settings, spec, base_model=base, pricing=pricing, adapter_name=name,
                              budget_usd=budget_usd, sign=sign, client=client, store=store)  # fmt: skip
    return job, plan


def merged_files(actor: Actor, settings: Settings, job_id: str, store: Any = None) -> list[Any]:
    """The files a completed merge job stored (`BlobInfo`s)."""
    from core.db import session_scope
    from core.storage import make_blob_store

    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if job.action != "merge":
            raise InvalidInput(f"job {job_id} is a {job.action} job, not a merge")
    store = store or make_blob_store(settings)
    return store.list("adapters", merged_prefix(actor.user_id, job_id))


