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


def _jwt(claims: dict) -> str:
    """A legacy Supabase key's shape: header.claims.signature (never verified by BrightRun)."""
    import base64
    import json

    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_new_supabase_keys_are_read_and_named(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    monkeypatch.setenv("STORAGE", "supabase")
    monkeypatch.setenv("SUPABASE_SECRET_KEY", "sb_secret_abc")
    monkeypatch.setenv("SUPABASE_PUBLISHABLE_KEY", "sb_publishable_def")
    s = Settings()
    assert s.supabase_key.get_secret_value() == "sb_secret_abc"
    assert s.supabase_anon_key.get_secret_value() == "sb_publishable_def"
    view = s.public_view()
    assert (view["supabase_key"], view["supabase_anon_key"]) == (
        "set (secret key)",
        "set (publishable key)",
    )
    assert "sb_secret_abc" not in str(view)


def test_legacy_keys_and_names_are_still_read_and_named_legacy(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    monkeypatch.setenv("SUPABASE_KEY", _jwt({"role": "service_role", "iss": "supabase"}))
    monkeypatch.setenv("SUPABASE_ANON_KEY", _jwt({"role": "anon", "iss": "supabase"}))
    view = Settings(storage="supabase", auth="supabase").public_view()
    assert view["supabase_key"] == "set (legacy service_role key)"
    assert view["supabase_anon_key"] == "set (legacy anon key)"


@pytest.mark.parametrize(
    ("variable", "key", "message"),
    [
        ("SUPABASE_SECRET_KEY", "sb_publishable_def", "holds the project's publishable key"),
        ("SUPABASE_KEY", _jwt({"role": "anon"}), "holds the project's legacy anon key"),
        ("SUPABASE_PUBLISHABLE_KEY", "sb_secret_abc", "holds the project's secret key"),
        (
            "SUPABASE_ANON_KEY",
            _jwt({"role": "service_role"}),
            "holds the project's legacy service_role key",
        ),
    ],
)
def test_a_key_in_the_wrong_place_is_refused_at_startup(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, variable: str, key: str, message: str
) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    monkeypatch.setenv(variable, key)
    with pytest.raises(ValidationError, match=message) as e:
        Settings()
    assert key not in str(e.value)  # the refusal names the kind, never the key


def test_a_key_that_is_not_a_known_shape_is_taken_as_given(data_dir: Path) -> None:
    from core.settings import supabase_key_kind

    assert supabase_key_kind("a.b.c") == "other"  # three parts, not base64 JSON
    assert supabase_key_kind(_jwt({"role": "authenticated"})) == "other"
    s = Settings(supabase_url="https://x.supabase.co", storage="supabase", supabase_key="k")
    assert s.public_view()["supabase_key"] == "set (other key)"
