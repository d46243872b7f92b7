"""Settings from environment variables, validated once at start.

Every variable is listed in the README. Secrets are `SecretStr`, so they
never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

HostPort = Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")]


class Settings(BaseSettings):
    """The gateway's configuration; the field names map to `NUELL_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="NUELL_", extra="ignore", frozen=True)

    database_url: SecretStr = Field(
        validation_alias=AliasChoices("DATABASE_URL", "NUELL_DATABASE_URL"),
        description="PostgreSQL URL (postgresql://user:pass@host:port/db or the socket form).",
    )
    gateway_addr: HostPort = Field(
        default="127.0.0.1:50051", description="Address the gRPC server binds; port 0 picks one."
    )
    compute_target: HostPort = Field(
        default="127.0.0.1:50052", description="Where rust_compute listens."
    )
    shutdown_grace_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long in-flight calls may finish on shutdown."
    )
    db_pool_size: int = Field(default=10, ge=1, le=200, description="Pooled connections kept.")
    db_max_overflow: int = Field(default=5, ge=0, le=200, description="Extra connections allowed.")
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="Wait for a pooled connection before UNAVAILABLE."
    )
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError("is not a URL") from None
        if url.get_backend_name() not in {"postgresql", "postgres"}:
            raise ValueError("must be a postgresql:// URL")
        return value

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """The database URL with the async psycopg 3 driver selected."""
        url = make_url(self.database_url.get_secret_value())
        return url.set(drivername="postgresql+psycopg")


def load_settings() -> Settings:
    """Read the settings from the environment (raises pydantic.ValidationError)."""
    return Settings()
