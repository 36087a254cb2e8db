"""One Settings object for the whole service (``HOMEPORT_*`` environment, optional ``.env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_list(value: Any) -> Any:
    """Accept a comma-separated string as well as a JSON list for list settings."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [part.strip() for part in stripped.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting is documented in docs/configuration.md (a test checks that)."""

    model_config = SettingsConfigDict(
        env_prefix="HOMEPORT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Storage and network
    data_dir: Path = Field(default=Path("./homeport-data"))
    database_url: str | None = None
    redis_url: str | None = None
    redis_key_prefix: str = "homeport"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_body_bytes: int = 5 * 1024 * 1024
    database_pool_size: int = 10
    database_echo: bool = False
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    # Secrets (generated into data_dir/secrets.json on first start when not given)
    secret_key: str | None = None
    jwt_keys: str | None = None
    jwt_active_kid: str | None = None
    jwt_issuer: str = "homeport"

    # Tokens and sessions
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    invitation_ttl_seconds: int = 7 * 24 * 3600

    # Login protection
    login_max_failures: int = 5
    login_lockout_seconds: int = 15 * 60
    argon2_time_cost: int = 3
    argon2_memory_cost_kib: int = 65536
    argon2_parallelism: int = 4

    # Rate limits (the `limits` notation: "N/second|minute|hour|day")
    rate_limit_enabled: bool = True
    rate_limit_default: str = "600/minute"
    rate_limit_login: str = "5/minute"
    rate_limit_health: str = "60/minute"

    # Durable jobs
    jobs_enabled: bool = True
    jobs_poll_interval_seconds: float = 1.0
    jobs_lease_seconds: int = 300
    jobs_max_attempts: int = 8
    session_cleanup_cron: str = "17 * * * *"

    # Sync
    sync_max_batch_items: int = 1000
    sync_max_batch_bytes: int = 5 * 1024 * 1024
    sync_pull_default_limit: int = 1000
    sync_pull_max_limit: int = 10000
    sync_tombstone_retention_days: int = 30
    sync_max_clock_skew_seconds: int = 300
    sync_idempotency_ttl_seconds: int = 7 * 24 * 3600
    sync_compaction_cron: str = "41 3 * * *"

    # Records REST API
    records_default_limit: int = 50
    records_max_limit: int = 1000
    records_max_batch_operations: int = 1000
    records_max_field_indexes: int = Field(default=32, ge=0)

    # Realtime (WebSocket)
    realtime_heartbeat_seconds: int = 30
    realtime_max_frame_bytes: int = 1024 * 1024
    realtime_messages_per_minute: int = 100
    realtime_send_queue: int = 256
    realtime_compression: bool = False

    # Files: storage, resumable uploads (REST chunks and tus), downloads, images
    storage_backend: str = "fs"
    storage_dir: Path | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_prefix: str = ""
    uploads_chunk_size_bytes: int = 1024 * 1024
    uploads_max_chunk_bytes: int = 64 * 1024 * 1024
    uploads_max_file_bytes: int = 2 * 1024 * 1024 * 1024
    uploads_ttl_seconds: int = 24 * 3600
    uploads_cleanup_cron: str = "23 * * * *"
    files_url_ttl_seconds: int = 3600
    images_max_pixels: int = 50_000_000
    images_max_inline_bytes: int = 10 * 1024 * 1024
    rate_limit_upload_init: str = "10/minute"
    rate_limit_upload_chunk: str = "1000/minute"

    # First start
    bootstrap_tenant: str = "default"
    bootstrap_email: str = "admin@example.com"

    # Logging
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'homeport.db').as_posix()}"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "files"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
