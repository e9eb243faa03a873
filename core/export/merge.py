"""A `merge` job: the adapter merged into its base model's weights.

`plan_merge(facts, ...)` is the planner for a `merge` job: memory (the base in the merge
dtype, the adapter, the largest weight's fp32 delta, CUDA context and allocator headroom)
with a fit verdict per GPU, disk, time (cold start, save, upload) and cost ranges.
`merge(actor, settings, ref, ...)` launches the job (`trainer.merge`): the merged
safetensors shards go to storage under `<owner>/jobs/<job id>/merged/` (upload URLs are
signed for every name the worker may write), and to `hub_repo` when given, pushed by the
worker with its own HF_TOKEN. `merged_files` lists what a completed merge stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from core import actions, adapters, jobs, planner
from core.clients.storage import DOWNLOAD_URL_TTL_S, adapter_key, job_prefix, make_blob_store
from core.db import repo, session_scope
from core.errors import InvalidInput
from core.export.hub import REPO_ID, check_namespace
from core.settings import Settings
from core.users import Actor
from trainer.shared.files import upload_names
from trainer.shared.spec import JobSpec

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
    per = MERGE_DTYPE_BYTES[dtype]
    weights = int(facts.params.total * per)
    largest = max(
        (w.numel for w in planner.weights(facts) if w.role in ("linear", "routed_experts")),
        default=0,
    )
    delta = largest * 4
    raw = weights + adapter_bytes + delta
    need = int(planner.CUDA_CONTEXT_BYTES + raw * (1 + planner.ALLOCATOR_HEADROOM))
    verdicts = []
    for g in gpus:
        gt = planner.gpu_type(g)
        verdicts.append(
            {
                "gpu": g,
                "name": gt.name,
                "memory_bytes": planner.device_bytes(gt),
                "verdict": planner.verdict_for(need, gt),
            }
        )
    cold_lo, cold_hi = planner.cold_start_s(facts)
    lo = cold_lo + weights / SAVE_BYTES_PER_S[0] + weights / UPLOAD_BYTES_PER_S[0]
    hi = cold_hi + weights / SAVE_BYTES_PER_S[1] + weights / UPLOAD_BYTES_PER_S[1]
    cost_rows = []
    for g in gpus:
        rate = planner.rate_per_second(g, tier, dict(price_overrides or {}))  # type: ignore[arg-type]
        cost_rows.append(
            {"gpu": g, "usd_low": round(lo * rate, 4), "usd_high": round(hi * rate, 4)}
        )
    return MergePlan(
        model=facts.id,
        dtype=dtype,
        weights_bytes=weights,
        adapter_bytes=adapter_bytes,
        delta_bytes=delta,
        need_bytes=need,
        disk_bytes=facts.params.total * 2 + weights,
        verdicts=verdicts,
        seconds_low=round(lo, 1),
        seconds_high=round(hi, 1),
        costs=cost_rows,
    )


def merged_prefix(owner_id: str, job_id: str) -> str:
    return job_prefix(owner_id, job_id) + "merged/"


@dataclass(frozen=True)
class VersionSource:
    """The version to merge: its adapter, number and base, and where its files are."""

    name: str
    version_id: str
    base: str
    stored: bool  # its files are in storage (else `folder` on the volume)
    folder: str | None
    size: int
    number: int | None


def version_source(actor: Actor, settings: Settings, ref: str, store: Any) -> VersionSource:
    with session_scope(settings) as s:
        v = adapters.resolve(actor, s, ref)
        name = adapters.adapter_name_of(s, v)
        stored = bool(v.storage_prefix) and store.exists(
            "adapters", v.storage_prefix + "adapter_model.safetensors"
        )
        src = VersionSource(
            name, v.id, v.base_model, stored, v.volume_path, v.size_bytes or 0, v.version
        )
        label = adapters.label(name, v)
    if not src.stored and not src.folder:
        raise InvalidInput(f"{label} has neither stored files nor a folder on the volume")
    return src


def checked_plan(
    settings: Settings, src: VersionSource, pricing: jobs.Pricing, dtype: str, to_storage: bool
) -> MergePlan | None:
    """The merge plan on the job's GPU (None when the planner cannot describe the base);
    `PlanRefused` when it does not fit, `InvalidInput` when stored files cannot be sized."""
    try:
        facts = planner.describe(src.base, local_models_dir=settings.data_dir / "models")
    except planner.ModelNotDescribable:
        facts = None
    if facts is None:
        if to_storage:
            raise InvalidInput(
                f"the planner cannot size {src.base}'s merged files; push them to the Hub with --hub-repo instead"
            )
        return None
    plan = plan_merge(
        facts,
        gpus=[pricing.priced_as],
        dtype=dtype,
        adapter_bytes=src.size,
        tier=settings.price_tier,
        price_overrides=settings.gpu_prices,
    )
    if not pricing.is_local and plan.verdicts[0]["verdict"] == "does_not_fit":
        raise jobs.PlanRefused(
            f"merging {src.base} in {dtype} needs about {plan.need_bytes / 2**30:.1f} GiB; it does not "
            f"fit {plan.verdicts[0]['name']}: pick a GPU with more memory"
        )
    return plan


def action_spec(
    settings: Settings,
    src: VersionSource,
    pricing: jobs.Pricing,
    job_id: str,
    action: str,
    section: dict[str, Any],
    names: list[str],
) -> JobSpec:
    """The spec of a `merge` or `gguf` job (`action`) on the version `src` with its section
    of settings, writing `names`; URLs are placeholders until `send_export` signs them.
    `InvalidInput` naming what the spec refused."""
    section = dict(section)
    if src.stored:
        section["adapter_urls"] = {
            f: "https://signed-url.invalid/" + f for f in adapters.PEFT_FILES
        }
    else:
        section["adapter_path"] = src.folder
    suffix = {"merge": "merged"}.get(action, action)
    try:
        return JobSpec(
            job_id=job_id,
            action=action,
            model={"name_or_path": jobs.worker_model(settings, src.base, pricing)},
            quantization="none",
            device=jobs.device_for(settings, pricing),
            output={
                "adapter_name": f"{src.name}-v{src.number or 0}-{suffix}"[:128],
                "upload_urls": {n: "https://signed-url.invalid/" + n for n in names},
            },
            **{action: section},
        )
    except ValidationError as e:
        raise InvalidInput(f"invalid {action} settings: {jobs.spec_errors(e)}") from None


def send_export(
    actor: Actor,
    settings: Settings,
    src: VersionSource,
    pricing: jobs.Pricing,
    spec: JobSpec,
    prefix: str,
    names: list[str],
    budget_usd: float | None,
    client: Any,
    store: Any,
) -> Any:
    """Send a `merge` or `gguf` job (`action_spec`), its URLs signed at send for the
    version's adapter files and the `names` it writes under `prefix`."""
    return actions.send_action(
        actor,
        settings,
        spec,
        base_model=src.base,
        pricing=pricing,
        adapter_name=src.name,
        budget_usd=budget_usd,
        sign=_signer(src, actor.user_id, prefix, names, spec.action),
        client=client,
        store=store,
    )


def _signer(
    src: VersionSource, owner: str, prefix: str, names: list[str], section: str
) -> Callable[[dict[str, Any], Any, int], dict[str, Any]]:
    """What signs a merge (or gguf, `section`) job's payload when it is sent: download URLs
    for the adapter's files (when stored) and upload URLs for the files it writes."""

    def sign(payload: dict[str, Any], st: Any, ttl: int) -> dict[str, Any]:
        if src.stored:
            payload[section]["adapter_urls"] = {
                f: st.signed_download_url(
                    "adapters", adapter_key(owner, src.version_id, f), DOWNLOAD_URL_TTL_S
                )
                for f in adapters.PEFT_FILES
            }
        payload["output"]["upload_urls"] = {
            n: st.signed_upload_url("adapters", prefix + n, ttl) for n in names
        }
        return payload

    return sign


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
    if hub_repo is not None and not REPO_ID.match(hub_repo):
        raise InvalidInput(f"Hub repo {hub_repo!r} must look like 'your-name/model-name'")
    store = store or make_blob_store(settings)
    src = version_source(actor, settings, ref, store)
    if hub_repo is not None:  # the worker pushes with the deployment's HF_TOKEN
        with session_scope(settings) as s:
            check_namespace(actor, s, hub_repo)
    pricing = jobs.pricing_for(settings, gpu_type)
    plan = checked_plan(settings, src, pricing, dtype, to_storage)
    job_id = repo.new_id("job")
    names = (
        upload_names(plan.weights_bytes, int(max_shard_size_mb * 1e6))
        if (to_storage and plan)
        else []
    )
    section = {"dtype": dtype, "max_shard_size_mb": max_shard_size_mb}
    section.update(hub_repo=hub_repo, hub_private=hub_private)
    spec = action_spec(settings, src, pricing, job_id, "merge", section, names)
    prefix = merged_prefix(actor.user_id, job_id)
    return send_export(
        actor, settings, src, pricing, spec, prefix, names, budget_usd, client, store
    ), plan


def merged_files(actor: Actor, settings: Settings, job_id: str, store: Any = None) -> list[Any]:
    """The files a completed merge job stored (`BlobInfo`s)."""
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if job.action != "merge":
            raise InvalidInput(f"job {job_id} is a {job.action} job, not a merge")
    store = store or make_blob_store(settings)
    return store.list("adapters", merged_prefix(actor.user_id, job_id))
