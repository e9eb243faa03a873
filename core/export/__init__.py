"""Taking an adapter version elsewhere: a zip, the Hugging Face Hub, or merged weights.

Modules: `card` (the record and the model card), `hub` (the folder, the zip, the Hub),
`merge` (the merge planner and the `merge` job), `gguf` and `gguf_job` (GGUF files for
llama.cpp and Ollama, written by `trainer.shared.gguf_write`).

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

- `export_gguf(actor, settings, ref, variant=..., adapter_only=...)` writes the version as
  GGUF (merged f16, bf16, Q8_0 or Q4_K_M, or the adapter alone as a GGUF LoRA) with an
  Ollama `Modelfile`, stores both and signs links (`gguf`): in the controller for a base of
  at most `GGUF_LOCAL_MAX_PARAMS` parameters, else by a `gguf` job on the GPU endpoint
  (`gguf_job`), which `gguf_job_status` follows (stage, share done, then the files).
  `plan_gguf` gives the expected size, where it is written and the refusal (architecture)
  first.

Nothing here puts a secret or a signed URL into a file: `brightrun.json` is built from the
stored (redacted) spec and the database. Errors: `NotFound` (no such version, or its files
are gone), `InvalidInput` (a bad repo id, HF_TOKEN not set), `ExportFailed` (the Hub
refused or could not be reached; the message never contains the token).
"""

from core.export.card import EXPORT_VERSION, loss_curve_svg, model_card, version_record
from core.export.gguf import VARIANTS as GGUF_VARIANTS
from core.export.gguf import (
    ExportRefused,
    GgufExport,
    GgufPlan,
    export_gguf,
    gguf_plans,
    plan_gguf,
)
from core.export.gguf_job import GgufFile, GgufJobStatus, gguf_job_status
from core.export.hub import ExportFailed, HubPush, build_folder, export_zip, push_to_hub
from core.export.merge import (
    MERGE_DTYPE_BYTES,
    MergePlan,
    merge,
    merged_files,
    merged_prefix,
    plan_merge,
)

__all__ = [
    "EXPORT_VERSION",
    "ExportFailed",
    "version_record",
    "model_card",
    "loss_curve_svg",
    "build_folder",
    "export_zip",
    "HubPush",
    "push_to_hub",
    "MERGE_DTYPE_BYTES",
    "MergePlan",
    "plan_merge",
    "merge",
    "merged_prefix",
    "merged_files",
    "GGUF_VARIANTS",
    "GgufExport",
    "GgufPlan",
    "ExportRefused",
    "export_gguf",
    "gguf_plans",
    "plan_gguf",
    "GgufFile",
    "GgufJobStatus",
    "gguf_job_status",
]
