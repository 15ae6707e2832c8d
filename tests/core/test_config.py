"""Settings: what each environment variable (and each legacy alias) sets, and what is derived."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.config import Mode, Settings

ALIASES = ("IMAGE_PROXY_PORT", "GOOGLE_AI_API_KEY_IMAGE", "GEMINI_API_KEY", "IMAGE_PROXY_MODEL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment with no imagegate setting in it."""
    for name in list(os.environ):
        if name.upper().startswith("IMAGEGATE_") or name.upper() in ALIASES:
            monkeypatch.delenv(name)


def settings() -> Settings:
    return Settings(_env_file=None)


def test_defaults_without_any_variable() -> None:
    """Nothing set: the documented defaults."""
    s = settings()
    assert (s.host, s.port, s.public_url) == ("127.0.0.1", 2407, None)
    assert s.data_dir == Path("./var")
    assert s.gemini_api_key is None and s.openai_api_key is None
    assert s.default_model is None
    assert s.sync_timeout_s == 540.0
    assert s.max_body_bytes == 64 * 1024 * 1024


def test_imagegate_prefixed_variables_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every field comes from its IMAGEGATE_* variable, converted to its type."""
    monkeypatch.setenv("IMAGEGATE_HOST", "0.0.0.0")
    monkeypatch.setenv("IMAGEGATE_PORT", "9000")
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IMAGEGATE_DEFAULT_MODEL", "demo-image")
    monkeypatch.setenv("IMAGEGATE_SYNC_TIMEOUT_S", "12.5")
    monkeypatch.setenv("IMAGEGATE_WORKER_CONCURRENCY", "7")
    monkeypatch.setenv("IMAGEGATE_MAX_BODY_MB", "1")
    s = settings()
    assert s.host == "0.0.0.0"
    assert s.port == 9000
    assert s.data_dir == tmp_path
    assert s.images_dir == tmp_path / "images"
    assert s.default_model == "demo-image"
    assert s.sync_timeout_s == 12.5
    assert s.worker_concurrency == 7
    assert s.max_body_bytes == 1024 * 1024


def test_cg_image_aliases_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CG-Image proxy's variable names still configure imagegate."""
    monkeypatch.setenv("IMAGE_PROXY_PORT", "8123")
    monkeypatch.setenv("GOOGLE_AI_API_KEY_IMAGE", "google-key-1")
    monkeypatch.setenv("IMAGE_PROXY_MODEL", "demo")
    s = settings()
    assert s.port == 8123
    assert s.gemini_api_key is not None
    assert s.gemini_api_key.get_secret_value() == "google-key-1"
    assert s.default_model == "demo"


def test_gemini_api_key_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """GEMINI_API_KEY alone sets the Gemini key."""
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-2")
    s = settings()
    assert s.gemini_api_key is not None
    assert s.gemini_api_key.get_secret_value() == "gemini-key-2"


def test_imagegate_name_wins_over_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """When both the IMAGEGATE_ name and an alias are set, the IMAGEGATE_ one is used."""
    monkeypatch.setenv("IMAGE_PROXY_PORT", "8123")
    monkeypatch.setenv("IMAGEGATE_PORT", "9001")
    monkeypatch.setenv("GEMINI_API_KEY", "from-alias")
    monkeypatch.setenv("IMAGEGATE_GEMINI_API_KEY", "from-imagegate")
    s = settings()
    assert s.port == 9001
    assert s.gemini_api_key is not None
    assert s.gemini_api_key.get_secret_value() == "from-imagegate"


def test_mode_is_embedded_without_redis() -> None:
    assert settings().mode is Mode.EMBEDDED


def test_mode_is_distributed_with_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert settings().mode is Mode.DISTRIBUTED


def test_database_url_defaults_to_sqlite_file_in_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path / "data"))
    expected = f"sqlite:///{(tmp_path / 'data' / 'imagegate.db').resolve()}"
    assert settings().resolved_database_url == expected


def test_configured_database_url_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_DATABASE_URL", "postgresql://db.internal:5432/imagegate")
    assert settings().resolved_database_url == "postgresql://db.internal:5432/imagegate"


def test_public_url_setting_loses_its_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_PUBLIC_URL", "https://images.example.com/gw/")
    s = settings()
    assert s.public_url == "https://images.example.com/gw"
    assert s.resolved_public_url == "https://images.example.com/gw"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", "2407", "http://127.0.0.1:2407"),
        ("0.0.0.0", "8080", "http://127.0.0.1:8080"),
        ("::", "8081", "http://127.0.0.1:8081"),
        ("gateway.internal", "80", "http://gateway.internal:80"),
    ],
)
def test_public_url_derived_from_host_and_port(
    monkeypatch: pytest.MonkeyPatch, host: str, port: str, expected: str
) -> None:
    """Without IMAGEGATE_PUBLIC_URL the URL is built from where the API listens; a wildcard
    bind address is replaced by loopback, which a client can actually reach."""
    monkeypatch.setenv("IMAGEGATE_HOST", host)
    monkeypatch.setenv("IMAGEGATE_PORT", port)
    assert settings().resolved_public_url == expected


def test_secrets_are_secretstr_and_absent_from_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_GEMINI_API_KEY", "gem-secret-123")
    monkeypatch.setenv("IMAGEGATE_OPENAI_API_KEY", "oai-secret-456")
    monkeypatch.setenv("IMAGEGATE_ADMIN_KEY", "admin-secret-789")
    monkeypatch.setenv("IMAGEGATE_URL_SIGNING_KEY", "sign-secret-000")
    s = settings()
    for field in ("gemini_api_key", "openai_api_key", "admin_key", "url_signing_key"):
        assert isinstance(getattr(s, field), SecretStr), field
    for text in (repr(s), str(s)):
        for secret in ("gem-secret-123", "oai-secret-456", "admin-secret-789", "sign-secret-000"):
            assert secret not in text
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "admin-secret-789"


def test_upstream_base_urls_lose_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_OPENAI_BASE_URL", "http://localhost:9999/v1/")
    monkeypatch.setenv("IMAGEGATE_GEMINI_BASE_URL", "https://gemini.example/")
    s = settings()
    assert s.openai_base_url == "http://localhost:9999/v1"
    assert s.gemini_base_url == "https://gemini.example"


@pytest.mark.parametrize("variable", ["IMAGEGATE_OPENAI_BASE_URL", "IMAGEGATE_GEMINI_BASE_URL"])
@pytest.mark.parametrize("url", ["ftp://example.com", "api.openai.com/v1", ""])
def test_non_http_base_url_is_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str
) -> None:
    monkeypatch.setenv(variable, url)
    with pytest.raises(ValidationError, match="must be an http\\(s\\) URL"):
        settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMAGEGATE_PORT", "not-a-port"),
        ("IMAGEGATE_SYNC_TIMEOUT_S", "0"),
        ("IMAGEGATE_WORKER_CONCURRENCY", "0"),
        ("IMAGEGATE_DEMO_LATENCY_S", "-1"),
    ],
)
def test_out_of_range_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        settings()


def test_every_setting_is_documented_in_the_readme_and_env_example() -> None:
    from pathlib import Path

    from pydantic import AliasChoices

    root = Path(__file__).resolve().parents[2]
    readme, example = (root / "README.md").read_text(), (root / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices), name
        env = str(alias.choices[0])
        assert env in readme, f"{env} is not in the README's settings table"
        assert env in example, f"{env} is not in .env.example"
