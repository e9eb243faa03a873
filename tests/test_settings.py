from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_defaults_point_at_the_local_stack(data_dir: Path) -> None:
    s = Settings()
    assert s.data_dir == data_dir
    assert s.db_url == f"sqlite:///{(data_dir / 'brightrun.db').as_posix()}"
    assert s.storage == "local"
    assert s.is_local_endpoint
    assert s.inference_url.startswith("http://127.0.0.1:")


def test_env_and_dotenv_are_read_env_wins(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("GPU_TYPE=A100_80GB\nJOB_BUDGET_USD=3\n")
    monkeypatch.setenv("JOB_BUDGET_USD", "7.5")
    s = Settings()
    assert s.gpu_type == "A100_80GB"
    assert s.job_budget_usd == 7.5


def test_secrets_never_printed(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_CLUSTER_API_KEY", "rpa_SECRET_abc123")
    monkeypatch.setenv("SUPABASE_KEY", "sb_SECRET_xyz")
    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    monkeypatch.setenv(
        "DATABASE_URL", "postgresql+psycopg://u:pg_SECRET_pw@db.example:5432/postgres"
    )
    s = Settings()
    for text in (repr(s), str(s), str(s.public_view()), s.model_dump_json()):
        assert "SECRET" not in text
    assert s.public_view()["gpu_cluster_api_key"] == "set"
    assert s.public_view()["hf_token"] == "not set"
    assert s.public_view()["database_url"] == "postgresql+psycopg://u:***@db.example:5432/postgres"
    assert s.gpu_cluster_api_key.get_secret_value() == "rpa_SECRET_abc123"


def test_supabase_storage_requires_credentials(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE", "supabase")
    with pytest.raises(ValidationError, match="SUPABASE_URL"):
        Settings()


def test_bad_values_are_rejected_with_the_field_named(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_BUDGET_USD", "-1")
    with pytest.raises(ValidationError, match="job_budget_usd"):
        Settings()
