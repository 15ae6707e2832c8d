"""The one typed settings object of imagegate.

Every setting is read from the environment (prefix ``IMAGEGATE_``) or a ``.env`` file, once, at
startup. Names are a public contract (see the README's settings table); the aliases accepted for
some of them come from the CG-Image proxy that imagegate replaces.
"""

from __future__ import annotations

import enum
import warnings
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Mode(enum.StrEnum):
    """How the queue runs: in this process (embedded) or over Redis (distributed)."""

    EMBEDDED = "embedded"
    DISTRIBUTED = "distributed"


class Environment(enum.StrEnum):
    """Where imagegate runs. Outside development, placeholder secrets are refused at startup."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


DEFAULT_MAX_INPUT_PIXELS = 40_000_000
"""The most pixels an input image may have (``IMAGEGATE_MAX_INPUT_PIXELS``): 40 megapixels holds
any camera photo and every size the catalogue's models make (at most about 19 megapixels), while
decoding one as RGBA takes at most 160 MB."""

PLACEHOLDER_SECRETS = frozenset({"changeme", "changethis", "change-me", "secret", "password"})
"""Values that mean "fill this in" (as in ``.env.example``), never a real secret."""


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"IMAGEGATE_{name}", *aliases)


class Settings(BaseSettings):
    """imagegate's configuration. See ``.env.example`` for every field with a comment."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True,
        # an error names the setting and says what is wrong; it never quotes values (secrets)
        hide_input_in_errors=True,
    )

    environment: Environment = Field(Environment.DEVELOPMENT, validation_alias=_env("ENVIRONMENT"))

    # -- where the API listens
    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(2407, validation_alias=_env("PORT", "IMAGE_PROXY_PORT"))
    public_url: str | None = Field(None, validation_alias=_env("PUBLIC_URL"))

    # -- storage and queue
    data_dir: Path = Field(Path("./var"), validation_alias=_env("DATA_DIR"))
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    db_pool_size: int = Field(20, ge=1, validation_alias=_env("DB_POOL_SIZE"))
    """Database connections per process (API or worker), opened as needed and then kept open."""
    db_max_overflow: int = Field(0, ge=0, validation_alias=_env("DB_MAX_OVERFLOW"))
    """Connections opened beyond the pool at a peak and closed as soon as they are returned: each
    costs a new connection's handshake on the hot path, so none by default."""
    queue: str = Field("imagegate", min_length=1, validation_alias=_env("QUEUE"))
    """The broker queue of image tasks; gateways that share one Redis each use their own."""
    storage_url: str | None = Field(None, validation_alias=_env("STORAGE_URL"))
    """Where images are kept: ``file:///path``, or ``s3://bucket/prefix``; unset: ``images/``
    under the data dir."""
    s3_endpoint_url: str | None = Field(
        None, validation_alias=_env("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"))
    """An S3-compatible endpoint (MinIO, R2, GCS...); unset: AWS S3 itself."""
    s3_region: str = Field("us-east-1", validation_alias=_env("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    s3_access_key_id: SecretStr | None = Field(None, validation_alias=_env("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_env("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"))
    s3_presigned_urls: bool = Field(False, validation_alias=_env("S3_PRESIGNED_URLS"))
    """``response_format=url`` hands out presigned object-store URLs (the bytes then never pass
    through the gateway) instead of the gateway's own signed ``/v1/files`` URLs."""

    # -- upstream providers (secrets: never logged, echoed or stored)
    gemini_api_key: SecretStr | None = Field(
        None, validation_alias=_env("GEMINI_API_KEY", "GOOGLE_AI_API_KEY_IMAGE", "GEMINI_API_KEY")
    )
    gemini_base_url: str = Field(
        "https://generativelanguage.googleapis.com", validation_alias=_env("GEMINI_BASE_URL")
    )
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str = Field("https://api.openai.com/v1", validation_alias=_env("OPENAI_BASE_URL"))
    vertex_project: str | None = Field(None, validation_alias=_env("VERTEX_PROJECT"))
    vertex_location: str = Field("global", validation_alias=_env("VERTEX_LOCATION"))
    vertex_credentials_file: Path | None = Field(
        None, validation_alias=_env("VERTEX_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")
    )
    vertex_base_url: str | None = Field(None, validation_alias=_env("VERTEX_BASE_URL"))
    vertex_api_version: str = Field("v1", validation_alias=_env("VERTEX_API_VERSION"))
    chat_upstream_base_url: str | None = Field(None, validation_alias=_env("CHAT_UPSTREAM_BASE_URL"))
    chat_upstream_api_key: SecretStr | None = Field(None, validation_alias=_env("CHAT_UPSTREAM_API_KEY"))

    # -- upstream calls: short connect, long read (an image takes 5-130 s), bounded retries
    upstream_connect_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("UPSTREAM_CONNECT_TIMEOUT_S"))
    upstream_timeout_s: float = Field(300.0, gt=0, validation_alias=_env("UPSTREAM_TIMEOUT_S"))
    upstream_max_attempts: int = Field(4, ge=1, validation_alias=_env("UPSTREAM_MAX_ATTEMPTS"))
    upstream_retry_budget_s: float = Field(600.0, gt=0, validation_alias=_env("UPSTREAM_RETRY_BUDGET_S"))
    upstream_backoff_base_s: float = Field(1.0, ge=0, validation_alias=_env("UPSTREAM_BACKOFF_BASE_S"))
    upstream_backoff_max_s: float = Field(30.0, ge=0, validation_alias=_env("UPSTREAM_BACKOFF_MAX_S"))
    upstream_max_connections: int | None = Field(None, ge=1, validation_alias=_env("UPSTREAM_MAX_CONNECTIONS"))
    """Connections a worker process opens to one upstream host; unset: the worker's concurrency,
    so that no call waits for a connection."""
    upstream_concurrent_reads: int = Field(16, ge=1, validation_alias=_env("UPSTREAM_CONCURRENT_READS"))
    """Upstream answers a worker process holds in memory at once, from the moment one is read
    until its images are stored and recorded (the others wait in their sockets): bounds the
    memory of many answers arriving together."""
    malloc_keep_mb: int = Field(256, ge=0, validation_alias=_env("MALLOC_KEEP_MB"))
    """Freed memory (MiB) each API and worker process keeps for the next images instead of handing
    it back to the system, which would fault each page in again (glibc's malloc, core/memory.py);
    0 leaves glibc's defaults."""
    circuit_failures: int = Field(5, ge=1, validation_alias=_env("CIRCUIT_FAILURES"))
    """Consecutive route failures (5xx, timeouts, connection errors, 429s, each after its retries)
    that open an upstream route's circuit; see core/circuit.py."""
    circuit_cooldown_s: float = Field(30.0, gt=0, validation_alias=_env("CIRCUIT_COOLDOWN_S"))
    """How long an open circuit skips its route before one probe call is let through."""

    # -- models and prices
    default_model: str | None = Field(None, validation_alias=_env("DEFAULT_MODEL", "IMAGE_PROXY_MODEL"))
    models_file: Path | None = Field(None, validation_alias=_env("MODELS_FILE"))
    prices_file: Path | None = Field(None, validation_alias=_env("PRICES_FILE"))
    demo_latency_s: float = Field(0.0, ge=0, validation_alias=_env("DEMO_LATENCY_S"))

    # -- operator
    admin_key: SecretStr | None = Field(None, validation_alias=_env("ADMIN_KEY"))
    auth_cache_s: float = Field(2.0, ge=0, validation_alias=_env("AUTH_CACHE_S"))
    """How long each API process keeps a key it has read: a key changed elsewhere (another API
    process, the command line) is seen within this; 0 reads the database on every request."""
    url_signing_key: SecretStr | None = Field(None, validation_alias=_env("URL_SIGNING_KEY"))
    file_url_ttl_s: int = Field(3600, gt=0, validation_alias=_env("FILE_URL_TTL_S"))

    # -- images callers send by URL (edits, chat, Anthropic, Gemini fileData)
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("FETCH_ALLOW_HOSTS")
    )
    """Hosts or networks fetched even though they are private (comma-separated)."""
    fetch_max_mb: float = Field(50.0, gt=0, validation_alias=_env("FETCH_MAX_MB"))
    """The largest single input image, fetched or sent inline."""
    fetch_timeout_s: float = Field(20.0, gt=0, validation_alias=_env("FETCH_TIMEOUT_S"))
    """How long one image URL may take to fetch."""
    fetch_total_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("FETCH_TOTAL_TIMEOUT_S"))
    """How long all the image URLs of one request may take to fetch, together."""
    max_input_images: int = Field(16, ge=1, le=64, validation_alias=_env("MAX_INPUT_IMAGES"))
    """The most input images one request may carry (a model may take fewer)."""
    max_input_mb: float = Field(100.0, gt=0, validation_alias=_env("MAX_INPUT_MB"))
    """The most bytes of input images one request may carry, in all."""
    max_input_pixels: int = Field(DEFAULT_MAX_INPUT_PIXELS, ge=1, validation_alias=_env("MAX_INPUT_PIXELS"))
    """The most pixels (width x height) one input image may have; checked from its header, before
    any pixel is decoded."""

    # -- dialect options
    anthropic_image_urls: bool = Field(False, validation_alias=_env("ANTHROPIC_IMAGE_URLS"))
    """Anthropic answers: put a gateway URL in the markdown instead of megabytes of base64."""
    anthropic_unknown_model: Literal["default", "error"] = Field(
        "default", validation_alias=_env("ANTHROPIC_UNKNOWN_MODEL"))
    """Anthropic Messages: a model id the catalogue does not know (Claude Code's own ``claude-…``)
    is served by the default model (``default``, reported in ``applied.adjusted``) or is a 404."""
    agent_system_prompt: Literal["drop", "forward"] = Field("drop", validation_alias=_env("AGENT_SYSTEM_PROMPT"))
    """Anthropic Messages and OpenAI Chat: the system prompt of a request that defines tools (a
    coding agent's) is left out of the image request and its bill (``drop``), or forwarded."""
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], validation_alias=_env("CORS_ORIGINS"))
    """Origins whose pages may call the API from a browser (comma-separated); ``*`` for any
    (keys are bearer tokens, not cookies); empty: no CORS headers at all."""

    # -- request handling
    sync_timeout_s: float = Field(540.0, gt=0, validation_alias=_env("SYNC_TIMEOUT_S"))
    """How long a synchronous call waits for its job: below the openai and anthropic SDKs' own
    600 s timeout, so that the caller hears the 504 naming its job before the SDK gives up."""
    events_keepalive_s: float = Field(10.0, gt=0, le=300, validation_alias=_env("EVENTS_KEEPALIVE_S"))
    """How often a job's event stream (``GET /v1/jobs/{id}/events``) sends a keep-alive while
    nothing changes, and reads the job again in case an event was lost."""
    max_body_mb: float = Field(64.0, gt=0, validation_alias=_env("MAX_BODY_MB"))

    # -- worker
    worker_concurrency: int = Field(200, ge=1, validation_alias=_env("WORKER_CONCURRENCY"))
    """Images one worker process runs at once. Each waits for its upstream as a coroutine on the
    process's event loop (``worker/pool.py``), not as a thread, so hundreds cost little."""
    image_lease_s: float = Field(60.0, gt=0, validation_alias=_env("IMAGE_LEASE_S"))
    """How long a running image stays its worker's without news: the worker renews it every third
    of this while the image runs, and once it lapses another worker takes the image over."""
    image_max_attempts: int = Field(3, ge=1, validation_alias=_env("IMAGE_MAX_ATTEMPTS"))
    """Attempts one image may start; an image whose last allowed attempt ended without an
    outcome (its worker died) fails with ``attempts_exhausted`` and its hold is released."""
    requeue_after_s: float = Field(300.0, gt=0, validation_alias=_env("REQUEUE_AFTER_S"))
    sweep_interval_s: float = Field(5.0, gt=0, validation_alias=_env("SWEEP_INTERVAL_S"))
    broker_visibility_timeout_s: int = Field(
        3600, gt=0, validation_alias=_env("BROKER_VISIBILITY_TIMEOUT_S")
    )
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("LOG_FORMAT"))
    """``json``: one JSON object per line, with the request, job and image ids of each record."""
    metrics: Literal["admin", "open", "off"] = Field("admin", validation_alias=_env("METRICS"))
    """``GET /metrics``: with the admin key as a bearer token (``admin``), to anyone (``open``),
    or not at all (``off``)."""
    worker_metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("WORKER_METRICS_PORT"))
    """``imagegate worker`` serves its own ``/metrics`` on this port (a worker on a host of its
    own); unset: none (on the API's host, share ``PROMETHEUS_MULTIPROC_DIR`` instead)."""

    # -- retention (the ledger is never deleted: billing and usage reports outlive every job)
    result_ttl_s: int | None = Field(None, gt=0, validation_alias=_env("RESULT_TTL_S"))
    """How long a finished job, its generated images and its rows are kept (unset: for ever); a
    job may ask for less (``result_ttl_s`` on ``POST /v1/jobs``)."""
    input_ttl_s: int | None = Field(None, gt=0, validation_alias=_env("INPUT_TTL_S"))
    """How long an input image is kept after the last request that sent it (unset: for ever)."""
    retention_interval_s: float = Field(3600.0, gt=0, validation_alias=_env("RETENTION_INTERVAL_S"))
    """How often the clean-up runs (Celery beat in distributed mode, the API in embedded mode)."""
    retention_batch: int = Field(500, ge=1, le=10_000, validation_alias=_env("RETENTION_BATCH"))
    """Jobs (or input images) deleted per transaction by one clean-up pass."""

    # -- webhooks (Standard Webhooks: https://www.standardwebhooks.com)
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("WEBHOOK_SECRET"))
    """``whsec_`` and base64: the secret signing every webhook (unset: webhooks are refused)."""
    webhook_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("WEBHOOK_TIMEOUT_S"))
    """How long one delivery attempt may take."""
    webhook_retry_base_s: float = Field(5.0, gt=0, validation_alias=_env("WEBHOOK_RETRY_BASE_S"))
    """The delay after the first failed attempt; it doubles after each one."""
    webhook_retry_max_s: float = Field(3600.0, gt=0, validation_alias=_env("WEBHOOK_RETRY_MAX_S"))
    """The longest delay between two attempts."""
    webhook_give_up_s: float = Field(86400.0, gt=0, validation_alias=_env("WEBHOOK_GIVE_UP_S"))
    """After this long since the job ended, a webhook not delivered is given up."""

    @field_validator("fetch_allow_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("storage_url", "s3_endpoint_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().rstrip("/") if not value.startswith("file://") else value.strip()

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _check_upstream_urls(self) -> Settings:
        for name in ("gemini_base_url", "openai_base_url", "vertex_base_url", "chat_upstream_base_url"):
            url = getattr(self, name)
            if url is None:
                continue
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http(s) URL, got {url!r}")
            setattr(self, name, url.rstrip("/"))
        return self

    @model_validator(mode="after")
    def _check_webhook_secret(self) -> Settings:
        if self.webhook_secret is None or not self.webhook_secret.get_secret_value().strip():
            self.webhook_secret = None
            return self
        from core.webhooks.signing import decode_secret

        self.webhook_secret = SecretStr(self.webhook_secret.get_secret_value().strip())
        try:
            decode_secret(self.webhook_secret.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"IMAGEGATE_WEBHOOK_SECRET: {exc}") from None
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        for name in ("admin_key", "url_signing_key"):
            secret = getattr(self, name)
            if secret is None or secret.get_secret_value().strip().lower() not in PLACEHOLDER_SECRETS:
                continue
            message = (f"IMAGEGATE_{name.upper()} is a placeholder ({secret.get_secret_value()!r}); "
                       "set a real secret")
            if self.environment is Environment.DEVELOPMENT:
                warnings.warn(message + " before running outside development.", stacklevel=2)
            else:
                raise ValueError(message + f" (IMAGEGATE_ENVIRONMENT={self.environment}).")
        return self

    @cached_property
    def mode(self) -> Mode:
        return Mode.DISTRIBUTED if self.redis_url else Mode.EMBEDDED

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL in force: the setting, else a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'imagegate.db').resolve()}"

    @cached_property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def resolved_upstream_max_connections(self) -> int:
        return self.upstream_max_connections or self.worker_concurrency

    @property
    def resolved_vertex_base_url(self) -> str:
        """Vertex's host: global, regional, or the configured override (tests, proxies)."""
        if self.vertex_base_url:
            return self.vertex_base_url
        if self.vertex_location == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{self.vertex_location}-aiplatform.googleapis.com"

    @property
    def circuit_probe_lease_s(self) -> float:
        """How long a probe may run before another worker may probe: one route call, retries
        included."""
        per_attempt = self.upstream_connect_timeout_s + self.upstream_timeout_s + self.upstream_backoff_max_s
        return min(self.upstream_retry_budget_s, per_attempt * self.upstream_max_attempts)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


def get_settings() -> Settings:
    """Read the settings from the environment (and ``.env``). Call once at startup."""
    return Settings()
