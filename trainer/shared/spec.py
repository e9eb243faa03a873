"""The one contract between the BrightRun controller and the GPU worker.

`JobSpec` is built by `core` and validated again by the worker; it imports pydantic only
(never torch), so the dashboard can use it without the training stack. Defaults live here
and only here. A spec carries no secrets: storage is reached through short-lived signed
URLs, and the Hugging Face token comes from the worker's own environment.

Actions (`JobSpec.action`): `train` (default; needs `data` and `output`), `merge` (merges
the adapter named in `merge` into the base `model`; needs `merge` and `output` with at least
one destination: upload URLs, a local folder or `merge.hub_repo`), `gguf` (the same merge
written as GGUF with an Ollama Modelfile; needs `gguf` and `output` with upload URLs or a
local folder), `cache_model` (downloads `model` into the worker's model cache once; takes
neither `data` nor `merge`; `output` only for its event-log upload URLs). A section that
does not belong to the action is refused. The `merge` and `gguf` sections are
`trainer.shared.export_spec`'s.

Methods (`JobSpec.method`, train jobs only): the table `trainer.shared.methods` (SFT on
chat or text rows, DPO and ORPO on preference pairs, KTO on labelled single answers;
settings in `preference`, defaults when it is left out). A method the worker does not
train yet is refused with the table's reason.

`Event` is the envelope of everything the worker reports: an ordered stream numbered by
`seq` from 0 (an attempt after the first continues at the spec's `first_seq`), one of
`EVENT_TYPES`, with a type-specific `data` dict (`progress`: a long action's stage, see
`trainer.gguf_job`). A `failed` event's data always has `kind`
(one of `FAILURE_KINDS`), `message` and `suggestion`. The tuples are derived from the
`EventType` and `FailureKind` literals, defined once.

Raises pydantic's `ValidationError` with messages that name the field and say what to do.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer.shared.export_spec import GgufSpec, MergeSpec
from trainer.shared.files import LOG_FILES
from trainer.shared.grpo_spec import GrpoSpec
from trainer.shared.methods import METHODS, SETTINGS, Method
from trainer.shared.parallel import MAX_GPUS, Sharding

SPEC_VERSION = (
    3  # 2: first_seq; 3: early stopping, eval_every, train_on_reasoning, method and preference
)

EventType = Literal["started", "metrics", "checkpoint", "progress", "completed", "failed"]
FailureKind = Literal[
    "out_of_memory",
    "bad_input",
    "model_unavailable",
    "download_failed",
    "diverged",
    "cancelled",
    "volume_full",
    "internal",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _slug(value: str, what: str) -> str:
    if not _SLUG.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    name_or_path: str = Field(min_length=1, max_length=300)
    revision: str | None = None

    @field_validator("name_or_path")
    @classmethod
    def _no_urls(cls, v: str) -> str:
        if "://" in v:
            raise ValueError(
                "base model must be a hub id like 'Qwen/Qwen2.5-7B-Instruct' or a model "
                "folder, not a URL"
            )
        return v


class DataSpec(_Strict):
    train_url: str | None = None
    train_path: str | None = None
    eval_url: str | None = None
    eval_path: str | None = None
    eval_fraction: float = Field(0.0, ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if bool(self.train_url) == bool(self.train_path):
            raise ValueError("give the training data as exactly one of train_url or train_path")
        if (self.eval_url or self.eval_path) and self.eval_fraction:
            raise ValueError("give either an eval file or eval_fraction, not both")
        return self


class LoraSpec(_Strict):
    r: int = Field(16, description="LoRA rank")
    alpha: float = 32.0
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False
    lora_on_experts: bool = False  # MoE only: also adapt the routed experts (costs memory)

    @field_validator("r")
    @classmethod
    def _rank(cls, v: int) -> int:
        if v < 1 or v > 1024:
            raise ValueError(f"LoRA rank must be between 1 and 1024 (got {v}); 8-64 is typical")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"LoRA alpha must be positive (got {v}); twice the rank is typical")
        return v

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules is empty: name modules or use 'all-linear'")
        return v


class EarlyStoppingSpec(_Strict):
    """Stop training once the eval loss stops falling, keeping the best weights.

    An evaluation counts as an improvement when its loss is lower than the best so far by
    more than `min_delta`; after `patience` evaluations in a row without one, training
    stops (reason `early_stopping`). The adapter delivered is then the weights with the
    lowest eval loss, also when the run goes to its last step. Needs evaluations during
    training (`eval_every`) and an eval split (`data.eval_fraction` or an eval file)."""

    patience: int = Field(3, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, description="how much lower an eval loss must be to count")

    @field_validator("patience")
    @classmethod
    def _patience(cls, v: int) -> int:
        if v < 1:
            raise ValueError(
                f"early stopping patience must be at least 1 evaluation (got {v}); 2-5 is "
                "typical; leave early_stopping out to train to the end"
            )
        return v

    @field_validator("min_delta")
    @classmethod
    def _min_delta(cls, v: float) -> float:
        if not (math.isfinite(v) and 0 <= v < 10):
            raise ValueError(
                f"early stopping min_delta must be a loss difference from 0 to 10 (got {v}); "
                "0 counts any fall of the eval loss, 0.001-0.01 ignores noise"
            )
        return v


Quantization = Literal["nf4", "int8", "none"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]


class TrainingSpec(_Strict):
    epochs: float | None = Field(1.0, gt=0, le=100)
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float = 2e-4
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, le=0.5)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    micro_batch_size: int = Field(4, ge=1, le=256)
    grad_accum: int = Field(4, ge=1, le=1024)
    max_length: int = Field(2048, ge=16, le=262144)
    packing: bool = True
    gradient_checkpointing: bool = True
    checkpoint_layers: Literal["as_needed", "all"] = Field(
        "as_needed",
        description="with gradient_checkpointing on: 'as_needed' recomputes only as many "
        "layers as the memory left after loading requires (measured at start; falls back to "
        "all layers if a step runs out of memory), 'all' recomputes every layer (least "
        "memory, about a third more compute)",
    )
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    eval_every: int = Field(0, ge=0, description="steps between evaluations; 0: at the end")
    checkpoint_every: int = Field(50, ge=0, description="steps between checkpoints; 0: never")
    log_every: int = Field(1, ge=1)
    time_limit_s: float | None = Field(
        None,
        gt=0,
        description="training seconds after which the worker saves, uploads what it has and "
        "ends as completed with reason 'time_limit' (the budget cap; the platform's "
        "executionTimeout is the hard stop above it)",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None, description="stop when the eval loss stops falling (off when left out)"
    )
    train_on_reasoning: bool = Field(
        True,
        description="an assistant turn's reasoning (its <think> block) carries loss like its "
        "answer and tool calls; off: only what follows the reasoning is learnt",
    )
    compute_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="dtype of the frozen base weights and of the matmuls (LoRA weights and "
        "optimizer state stay float32); auto: bfloat16 where the device computes it natively "
        "(CUDA Ampere or newer, CPUs with AMX/AVX512-BF16), else float32",
    )

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"learning rate must be in (0, 1) (got {v}); 1e-4 to 3e-4 is typical")
        return v

    @model_validator(mode="after")
    def _length(self) -> TrainingSpec:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set epochs or max_steps")
        if self.early_stopping is not None and not self.eval_every:
            raise ValueError(
                "early stopping compares evaluations made during training: set eval_every to "
                "the steps between them (e.g. a tenth of the run's steps), or leave "
                "early_stopping out"
            )
        return self


class OutputSpec(_Strict):
    adapter_name: str
    # Signed URLs the worker PUTs its results to, by file name (`trainer.shared.files`): the
    # adapter folder's files (ADAPTER_FILES) or a merge's (upload_names), plus LOG_FILES
    # ("events.jsonl" and "result.json", the full event log and final result).
    upload_urls: dict[str, str] = Field(default_factory=dict)
    local_dir: str | None = None  # also write the adapter here (local runs, tests)

    @field_validator("adapter_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _slug(v, "adapter name")


class CacheSpec(_Strict):
    """A `cache_model` job: besides the 16-bit files, optionally store a copy quantised as
    the job's `quantization` (nf4 or int8), which 4-bit jobs can load without quantising."""

    quantized_copy: bool = False


Action = Literal["train", "merge", "gguf", "cache_model"]
PreferenceLoss = Literal["sigmoid", "hinge", "ipo"]


def _setting(name: str) -> Any:
    """A preference setting's field, its default and bounds from the methods' table."""
    s = SETTINGS[name]
    return Field(s.default, gt=s.gt, le=s.le, description=s.help)


class PreferenceSpec(_Strict):
    """Settings of preference tuning (`method` dpo, orpo or kto; defaults, bounds and help
    in `trainer.shared.methods.SETTINGS`, which settings each method reads in its table).

    DPO: `beta` scales the log-ratio against the reference (higher keeps the adapter
    closer to it); `loss_type` is the DPO variant: `sigmoid` (the DPO paper), `hinge`
    (SLiC) or `ipo`. ORPO: `orpo_lambda` weighs the odds-ratio term against the
    chosen answers' cross-entropy; it takes no reference model. KTO: `beta`, and
    `desirable_weight` / `undesirable_weight` weigh the two kinds of answers."""

    beta: float = _setting("beta")
    loss_type: PreferenceLoss = cast(PreferenceLoss, SETTINGS["loss_type"].default)
    orpo_lambda: float = _setting("orpo_lambda")
    desirable_weight: float = _setting("desirable_weight")
    undesirable_weight: float = _setting("undesirable_weight")


class JobSpec(_Strict):
    version: int = SPEC_VERSION
    job_id: str
    action: Action = "train"
    model: ModelSpec
    data: DataSpec | None = None  # required by `train`
    lora: LoraSpec = LoraSpec()
    quantization: Quantization = "nf4"
    training: TrainingSpec = TrainingSpec()
    output: OutputSpec | None = None  # required by `train`, `merge` and `gguf`
    merge: MergeSpec | None = None
    gguf: GgufSpec | None = None
    cache: CacheSpec | None = None
    device: Literal["auto", "cuda", "cpu"] = "auto"
    method: Method = Field(
        Method.SFT,
        description="; ".join(f"{m}: {i.help}" for m, i in METHODS.items()),
    )
    preference: PreferenceSpec | None = None  # dpo/orpo/kto settings; defaults when left out
    grading: GrpoSpec | None = None  # method grpo: its graders and sampling (required there)
    resume_from: str | None = Field(
        None, description="adapter folder or URL to continue training from (a parent version)"
    )
    first_seq: int = Field(
        0,
        ge=0,
        description="the controller holds every event numbered below this; the worker numbers "
        "from here and first re-sends the earlier attempt's logged events at or above it",
    )
    gpus: int = Field(
        1,
        ge=1,
        le=MAX_GPUS,
        description="GPUs the job trains on, one process each (torchrun, FSDP2; see "
        "trainer.shared.parallel): the global batch is the same on any count",
    )
    sharding: Sharding = Field(
        "auto",
        description="with gpus > 1: fsdp shards the base too, ddp replicates it on each GPU; "
        "auto chooses (trainer.shared.parallel.choose)",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SPEC_VERSION:
            raise ValueError(
                f"job spec version {v} is not supported by this worker (speaks {SPEC_VERSION}); "
                "update the worker image or the dashboard so they match"
            )
        return v

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, v: str) -> str:
        return _slug(v, "job id")

    @model_validator(mode="after")
    def _action_sections(self) -> JobSpec:
        a = self.action
        if a == "train" and self.data is None:
            raise ValueError("a training job needs data: give data.train_url or data.train_path")
        if a in ("train", "merge", "gguf") and self.output is None:
            what = {"train": "adapter", "merge": "merged model", "gguf": "GGUF export"}[a]
            raise ValueError(f"a {a} job needs output.adapter_name (the {what}'s name)")
        if a != "train" and self.data is not None:
            raise ValueError(f"a {a} job takes no training data: leave out data")
        if a == "train" and self.training.early_stopping is not None and not self._has_eval():
            raise ValueError(
                "early stopping watches the eval loss, and this job has no eval split: hold out "
                "rows with data.eval_fraction (e.g. 0.05) or give an eval file, or leave "
                "training.early_stopping out"
            )
        if a != "train" and self.resume_from:
            raise ValueError("resume_from only applies to a train job")
        for section in ("merge", "gguf"):
            if (a == section) != (getattr(self, section) is not None):
                raise ValueError(
                    f"a {a} job needs a {a} section naming the adapter ({a}.adapter_path or "
                    f"{a}.adapter_urls)"
                    if a == section
                    else f"{section} settings do not apply to a {a} job"
                )
        m = METHODS[self.method]
        if m.method is not Method.SFT and a != "train":
            raise ValueError(f"method {self.method} only applies to a train job")
        if not m.trains:
            raise ValueError(m.not_trained)
        if (self.grading is not None) != m.generates:
            raise ValueError(
                f"method {self.method} needs a grading section (its graders)"
                if m.generates
                else f"grading settings (graders) do not apply to method {self.method}"
            )
        if not m.settings and self.preference is not None:
            takes = [str(k) for k, i in METHODS.items() if i.settings]
            takes = ", ".join(takes[:-1]) + " or " + takes[-1]
            raise ValueError(
                f"preference settings apply to method {takes}: set method, or leave out preference"
            )
        if self.cache is not None and a != "cache_model":
            raise ValueError(f"cache settings do not apply to a {a} job")
        if a in ("merge", "gguf"):
            assert self.output is not None
            files = set(self.output.upload_urls) - set(LOG_FILES)
            if not (files or self.output.local_dir or (self.merge and self.merge.hub_repo)):
                raise ValueError(
                    "say where the merged model goes: output.upload_urls, output.local_dir"
                    + (" or merge.hub_repo" if a == "merge" else "")
                )
        if (
            a == "cache_model"
            and self.cache
            and self.cache.quantized_copy
            and self.quantization == "none"
        ):
            raise ValueError("cache.quantized_copy needs quantization nf4 or int8")
        return self

    @model_validator(mode="after")
    def _multi_gpu(self) -> JobSpec:
        if self.gpus == 1:
            if self.sharding != "auto":
                raise ValueError(
                    "sharding applies to jobs on several GPUs: set gpus or leave it out"
                )
            return self
        if self.action != "train":
            raise ValueError(f"a {self.action} job runs on one GPU: leave gpus out")
        if self.method is not Method.SFT:
            raise ValueError(
                f"method {self.method} trains on one GPU for now: set gpus to 1, or train sft"
            )
        if self.training.early_stopping is not None:
            raise ValueError(
                "early stopping runs on one GPU for now: set gpus to 1 or leave "
                "training.early_stopping out"
            )
        if self.sharding == "fsdp" and self.quantization == "int8":
            raise ValueError(
                "FSDP2 cannot shard int8 (bitsandbytes) weights: use sharding ddp or auto (the "
                "8-bit base replicated on each GPU), or quantization nf4 or none"
            )
        return self

    def _has_eval(self) -> bool:
        d = self.data
        return d is not None and bool(d.eval_url or d.eval_path or d.eval_fraction > 0)

    @property
    def sequences_per_row(self) -> int:
        """Sequences with gradients a training row becomes (the methods' table): 2 for a
        preference pair (chosen, rejected), so a micro-batch holds up to `micro_batch_size`
        x this x `max_length` tokens."""
        per_row = self.grading.num_generations if self.grading is not None else 1
        return METHODS[self.method].grad_sequences * per_row

    @property
    def preference_settings(self) -> PreferenceSpec:
        """The preference settings in force (defaults when the spec leaves them out)."""
        return self.preference or PreferenceSpec()


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=0)
    type: EventType
    ts: float = Field(default_factory=time.time)
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _failed_shape(self) -> Event:
        if self.type == "failed":
            missing = {"kind", "message", "suggestion"} - set(self.data)
            if missing:
                raise ValueError(f"failed event lacks {sorted(missing)}")
            if self.data["kind"] not in FAILURE_KINDS:
                raise ValueError(f"unknown failure kind {self.data['kind']!r}")
        return self
