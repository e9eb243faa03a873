"""The one place BrightRun reads its environment.

`Settings` is built from, in order of precedence: explicit keyword arguments, environment
variables, a `.env` file in the working directory, then the defaults below. Every variable
is documented in `.env.example`. Build it once at the edge (`load_settings()` in the CLI,
the dashboard's session factory) and pass it in; nothing else reads `os.environ`.

Secrets are `SecretStr`: their repr and str are masked, `public_view()` reports only
whether each is set, and nothing here ever writes them to a log, the database or a job
payload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_ENDPOINT_PORT = 8300
LOCAL_INFERENCE_PORT = 8301
DASHBOARD_PORT = 8501


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error would otherwise print every value it was given,
    # secrets included, wherever the error is shown or logged.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    data_dir: Path = Field(
        Path("./data"), validation_alias=AliasChoices("BRIGHTRUN_DATA_DIR", "data_dir")
    )
    # Secret because a Postgres URL carries a password; use `db_url` for the plain value.
    database_url: SecretStr = SecretStr("")  # empty: SQLite at <data_dir>/brightrun.db
    storage: Literal["local", "supabase"] = "local"
    auth: Literal["none", "supabase"] = "none"

    supabase_url: str = ""
    # The project's secret key (sb_secret_...; the legacy service_role JWT is still read, as
    # is the old variable name SUPABASE_KEY): server side only, storage and signed URLs.
    supabase_key: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("SUPABASE_SECRET_KEY", "SUPABASE_KEY", "supabase_key"),
    )
    # The publishable key (sb_publishable_...; legacy: the anon JWT, SUPABASE_ANON_KEY): the
    # sign-in client's key, used on the server only.
    supabase_anon_key: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices(
            "SUPABASE_PUBLISHABLE_KEY", "SUPABASE_ANON_KEY", "supabase_anon_key"
        ),
    )
    # Supabase Storage's S3 protocol (Storage > Settings > S3 access keys): with both keys
    # set, job upload URLs are SigV4 presigned URLs that last as long as a job needs (up to
    # 7 days) instead of Supabase's fixed 2-hour signed upload URLs. The endpoint defaults
    # to <SUPABASE_URL>/storage/v1/s3; the region is the project's (Storage > S3).
    supabase_s3_access_key_id: SecretStr = SecretStr("")
    supabase_s3_secret_access_key: SecretStr = SecretStr("")
    supabase_s3_region: str = ""
    supabase_s3_endpoint: str = ""

    gpu_cluster_api_url: str = f"http://127.0.0.1:{LOCAL_ENDPOINT_PORT}/v2/local"
    gpu_cluster_api_key: SecretStr = SecretStr("local-dev-key")
    # Multi-GPU jobs: GPU count -> the trainer endpoint whose workers have that many GPUs,
    # e.g. GPU_CLUSTER_API_URLS='{"4": "https://api.runpod.ai/v2/xyz"}' (`brightrun deploy
    # --gpu-count 4` writes it). A one-GPU job goes to GPU_CLUSTER_API_URL; the local
    # endpoint runs any count on the CPU.
    gpu_cluster_api_urls: dict[str, str] = Field(default_factory=dict)
    runpod_api_key: SecretStr = SecretStr("")  # account-level key, only for `brightrun deploy`
    # RunPod's REST API v2, which `brightrun deploy` manages volumes, templates and endpoints
    # through (a stand-in server in tests).
    runpod_rest_url: str = "https://api.runpod.io/v2"

    inference_url: str = f"http://127.0.0.1:{LOCAL_INFERENCE_PORT}/v1"
    inference_api_key: SecretStr = SecretStr("local-dev-key")
    # One endpoint per further base model: base model name -> its server's /v1 URL, e.g.
    # INFERENCE_URLS='{"Qwen/Qwen2.5-7B-Instruct": "https://api.runpod.ai/v2/abc/openai/v1"}'.
    # Adapters are chatted with and evaluated on their base's endpoint; a base not named
    # here goes to INFERENCE_URL. Every endpoint takes INFERENCE_API_KEY.
    inference_urls: dict[str, str] = Field(default_factory=dict)
    # How an adapter the server does not list yet is made available: `runtime` posts
    # /v1/load_lora_adapter, `resolver` leaves it to vLLM's filesystem resolver, `auto`
    # tries runtime loading and falls back to the resolver when the server refuses it.
    inference_lora_loading: Literal["auto", "runtime", "resolver"] = "auto"
    # The adapter folder as the inference server sees it (`<dir>/<adapter name>/`), e.g.
    # /runpod-volume/adapters; empty: <data_dir>/volume/adapters (the local stack's volume).
    inference_adapters_dir: str = ""
    # The base model the local inference server serves; empty: the tiny demo model.
    inference_base_model: str = ""
    # Which server `brightrun up` runs for a loopback INFERENCE_URL: `local`, BrightRun's
    # light imitation of vLLM's API (transformers + peft), or `vllm`, real vLLM's CPU build
    # from .venv-vllm (`make vllm`).
    inference_engine: Literal["local", "vllm"] = "local"
    # The largest adapter rank the local inference server takes (vLLM's --max-lora-rank; its
    # default 16). A larger adapter is refused when it is loaded.
    inference_max_lora_rank: Literal[8, 16, 32, 64, 128, 256] = 16

    hf_token: SecretStr = SecretStr("")
    notify_webhook_url: SecretStr = SecretStr("")

    # Prices and budgets. `gpu_prices` overrides the table in core/planner/pricing.py, $/hour per GPU
    # type id, e.g. GPU_PRICES='{"H100_80GB_SXM": 4.18}'.
    gpu_type: str = "H100_80GB_PCIE"
    gpu_prices: dict[str, float] = Field(default_factory=dict)
    # The GPU type ids the training endpoint's pools may run a job on (`brightrun deploy`
    # writes them), e.g. ENDPOINT_GPU_TYPES='["A40_48GB","A6000_48GB"]'; empty: GPU_TYPE only.
    # A budget's time limit is computed at the most expensive of them.
    endpoint_gpu_types: list[str] = Field(default_factory=list)
    price_tier: Literal["flex", "active"] = "flex"
    job_budget_usd: float = Field(10.0, gt=0)
    monthly_budget_usd: float = Field(200.0, gt=0)
    max_concurrent_jobs: int = Field(2, ge=1)

    # Local stack.
    local_workers: int = Field(1, ge=1, le=8)
    local_device: Literal["auto", "cpu", "cuda"] = "auto"
    # Seconds the local endpoint keeps a finished job's result (RunPod keeps /run results 30 min).
    local_result_retention_s: float = Field(1800.0, gt=0)
    public_base_url: str = (
        f"http://127.0.0.1:{LOCAL_ENDPOINT_PORT}"  # where local signed URLs point
    )
    url_signing_key: SecretStr = SecretStr("")  # empty: generated once into <data_dir>
    max_upload_mb: int = Field(200, ge=1)
    # Folders a base model given as a path may come from, besides <data_dir>/models (always
    # allowed), e.g. MODEL_DIRS='["/runpod-volume/models"]'. A path anywhere else is refused.
    model_dirs: list[Path] = Field(default_factory=list)
    # Where `brightrun login` keeps the command line's Supabase session (AUTH=supabase), 0600.
    cli_profile: Path = Field(
        Path("~/.config/brightrun/session.json"),
        validation_alias=AliasChoices("BRIGHTRUN_PROFILE", "cli_profile"),
    )

    # Jobs: seconds between background syncs of unfinished jobs; relaunch once after an
    # out-of-memory failure with the settings the worker suggests (within the budget).
    sync_interval_s: float = Field(5.0, gt=0)
    auto_relaunch_oom: bool = False

    # GGUF export (`core.export.gguf`): a merged model of a base with at most this many
    # parameters is written in the controller (a float32 merge on its CPU: about 6 bytes per
    # parameter of memory, 25 GB at 4B); a larger one by a `gguf` job on the GPU endpoint.
    gguf_local_max_params: int = Field(4_100_000_000, ge=0)
    # A `gguf` job uploads each file with one signed PUT, which a store takes up to a limit
    # (S3: 5 GiB; Supabase: the project's upload file size limit). A larger GGUF is written
    # as llama.cpp's split GGUF, each file under this many MiB.
    gguf_max_file_mb: float = Field(5120.0, gt=0)

    # Evaluation when a training job completes: the dataset's eval split (at most
    # EVAL_MAX_ROWS rows) through the adapter and the base on the inference server, greedy,
    # up to EVAL_MAX_TOKENS tokens an answer. EVAL_JUDGE adds an LLM judge's win rate of
    # adapter vs base (EVAL_JUDGE_MODEL on the same server; empty: the served base model).
    eval_after_job: bool = True
    eval_max_rows: int = Field(50, ge=1, le=5000)
    eval_max_tokens: int = Field(128, ge=1, le=4096)
    eval_judge: bool = False
    eval_judge_model: str = ""
    # The OpenAI-compatible endpoint `score_model` graders ask when a GRPO version is
    # evaluated here (`core.evaluate_grpo`); empty: such graders are left out, with a reason.
    grader_base_url: str = ""
    grader_api_key: SecretStr = SecretStr("")
    # At most EVAL_MAX_RUNNING evaluations run at once (others wait, pending, for the
    # syncer); one whose owning process is gone (same host: its pid; another host: no word
    # for EVAL_LEASE_S seconds) is taken over by the syncer (`core.eval_owner`).
    eval_max_running: int = Field(2, ge=1, le=64)
    eval_lease_s: float = Field(1800.0, gt=0)

    # Checkpoints on the volume (`core.retention`, applied by the syncer to the local volume
    # folder): each job keeps its last CHECKPOINT_KEEP_LAST; a finished job's are dropped
    # CHECKPOINT_RETENTION_DAYS after it ended, promoted ones excepted. The volume is billed
    # per GB-month (RunPod network volume: $0.07/GB-month under 1 TB).
    checkpoint_keep_last: int = Field(3, ge=1, le=1000)
    checkpoint_retention_days: float = Field(14.0, gt=0)
    volume_usd_per_gb_month: float = Field(0.07, ge=0)

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        if not self.database_url.get_secret_value():
            self.database_url = SecretStr(
                f"sqlite:///{(self.data_dir / 'brightrun.db').as_posix()}"
            )
        if self.storage == "supabase" and not (
            self.supabase_url and self.supabase_key.get_secret_value()
        ):
            raise ValueError("STORAGE=supabase needs SUPABASE_URL and SUPABASE_SECRET_KEY")
        secret = supabase_key_kind(self.supabase_key.get_secret_value())
        if secret in ("publishable", "legacy anon"):
            raise ValueError(
                f"SUPABASE_SECRET_KEY holds the project's {secret} key: the server's storage "
                "client needs the secret key (sb_secret_..., Project Settings > API Keys; "
                "or the legacy service_role key)"
            )
        public = supabase_key_kind(self.supabase_anon_key.get_secret_value())
        if public in ("secret", "legacy service_role"):
            raise ValueError(
                f"SUPABASE_PUBLISHABLE_KEY holds the project's {public} key, which bypasses "
                "every row-level policy: use the publishable key (sb_publishable_...; or the "
                "legacy anon key) for sign-in"
            )
        s3 = (self.supabase_s3_access_key_id, self.supabase_s3_secret_access_key)
        if bool(s3[0].get_secret_value()) != bool(s3[1].get_secret_value()):
            raise ValueError(
                "set both SUPABASE_S3_ACCESS_KEY_ID and SUPABASE_S3_SECRET_ACCESS_KEY, or neither"
            )
        if s3[0].get_secret_value() and not self.supabase_s3_region:
            raise ValueError(
                "SUPABASE_S3_ACCESS_KEY_ID needs SUPABASE_S3_REGION (Storage > S3 in the dashboard)"
            )
        if self.auth == "supabase" and not self.supabase_url:
            raise ValueError("AUTH=supabase needs SUPABASE_URL and SUPABASE_PUBLISHABLE_KEY")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def supabase_s3_url(self) -> str:
        """The S3 endpoint of Supabase Storage: SUPABASE_S3_ENDPOINT, else derived."""
        if self.supabase_s3_endpoint:
            return self.supabase_s3_endpoint.rstrip("/")
        return f"{self.supabase_url.rstrip('/')}/storage/v1/s3" if self.supabase_url else ""

    @property
    def is_local_endpoint(self) -> bool:
        return self.gpu_cluster_api_url.startswith(f"http://127.0.0.1:{LOCAL_ENDPOINT_PORT}")

    def public_view(self) -> dict[str, str]:
        """What may be shown to a user: plain values, and only set/not set for secrets."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                out[name] = _mask_url_password(self.db_url)
            elif name in ("supabase_key", "supabase_anon_key") and value.get_secret_value():
                out[name] = f"set ({supabase_key_kind(value.get_secret_value())} key)"
            elif isinstance(value, SecretStr):
                out[name] = "set" if value.get_secret_value() else "not set"
            else:
                out[name] = str(value)
        return out


SupabaseKeyKind = Literal["secret", "publishable", "legacy service_role", "legacy anon", "other"]


def supabase_key_kind(key: str) -> SupabaseKeyKind:
    """Which of a Supabase project's API keys `key` is, by its published shape: the new keys
    by their `sb_secret_` / `sb_publishable_` prefixes; a legacy key by the `role` claim of a
    JWT (read, never verified: BrightRun does not treat keys as JWTs or check signatures).
    Anything else (a self-hosted or test key) is "other" and accepted as given."""
    if key.startswith("sb_secret_"):
        return "secret"
    if key.startswith("sb_publishable_"):
        return "publishable"
    parts = key.split(".")
    if len(parts) == 3:
        import base64
        import binascii
        import json

        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (binascii.Error, ValueError):
            return "other"
        role = claims.get("role") if isinstance(claims, dict) else None
        if role == "service_role":
            return "legacy service_role"
        if role == "anon":
            return "legacy anon"
    return "other"


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as the scheme only
        return url.split(":", 1)[0] + ":<unparsable>"


def load_settings(**overrides: object) -> Settings:
    """Build the settings once at the edge; pass the object in from there."""
    return Settings(**overrides)
