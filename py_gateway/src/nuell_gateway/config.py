"""Settings from environment variables, validated once at start.

Every variable is listed in the README. Secrets are `SecretStr`, so they
never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# HS256 keys shorter than the hash output weaken it (RFC 7518, section 3.2).
MIN_SIGNING_KEY_BYTES = 32

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
    metrics_addr: HostPort = Field(
        default="127.0.0.1:9464", description="Where /metrics is served (Prometheus)."
    )
    compute_target: HostPort = Field(
        default="127.0.0.1:50052", description="Where rust_compute listens."
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=64,
        description="Server processes sharing the port (SO_REUSEPORT); one per core by default.",
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

    # Posts and their analysis (docs/posts.md).
    near_duplicate_threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Shingle Jaccard at which a new post repeats an old one.",
    )
    similar_posts_threshold: float = Field(
        default=0.5,
        ge=0.3,
        le=1,
        description="Shingle Jaccard at which ListSimilarPosts lists a post (0.3 to 1).",
    )
    search_timeout_ms: int = Field(
        default=2000,
        ge=10,
        le=60_000,
        description="Statement timeout of the search and similar-posts queries.",
    )
    near_duplicate_window_hours: float = Field(
        default=24, gt=0, le=24 * 365, description="How far back an author's posts are compared."
    )
    near_duplicate_window_posts: int = Field(
        default=50, ge=1, le=1000, description="At most this many recent posts are compared."
    )
    compute_write_deadline_seconds: float = Field(
        default=1.0, gt=0, le=30, description="How long a post write waits for its analysis."
    )
    analysis_backfill_interval_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="How often pending analyses are retried."
    )

    # WatchPosts (docs/posts.md, "Live posts").
    watch_heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=3600, description="A HEARTBEAT after this long without an event."
    )
    watch_buffer_events: int = Field(
        default=1000, ge=1, le=1_000_000, description="Events a stream may fall behind."
    )
    watch_max_streams: int = Field(
        default=5000, ge=1, le=1_000_000, description="Open WatchPosts streams per process."
    )
    watch_max_streams_per_user: int = Field(
        default=20, ge=1, le=100_000, description="Open WatchPosts streams per account and process."
    )
    watch_auth_check_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How often a stream re-checks its access token."
    )
    post_events_retention_hours: float = Field(
        default=24, gt=0, le=24 * 365, description="How long WatchPosts can resume from."
    )

    # Tokens (see docs/security.md for key rotation).
    jwt_keys: SecretStr = Field(
        description=(
            "Access-token signing keys as `kid:secret` pairs separated by commas; the first "
            "signs, all verify. Each secret is at least 32 bytes."
        ),
    )
    jwt_issuer: str = Field(default="nuell", min_length=1)
    jwt_audience: str = Field(default="nuell-api", min_length=1)
    access_token_ttl_seconds: int = Field(default=1800, ge=60, le=86400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=3600, le=365 * 86400)

    # Sessions, second factor, throttling, audit (docs/security.md, "Sessions").
    refresh_reuse_grace_seconds: int = Field(
        default=10,
        ge=0,
        le=300,
        description="A spent refresh token presented again this soon gets the same successor.",
    )
    totp_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Keys that encrypt TOTP secrets, `kid:secret` pairs like NUELL_JWT_KEYS; the first "
            "encrypts, all decrypt. Unset: two-factor sign-in cannot be turned on."
        ),
    )
    mfa_token_ttl_seconds: int = Field(
        default=300, ge=30, le=3600, description="How long a Login's mfa_token waits for VerifyMfa."
    )
    login_failures_before_delay: int = Field(
        default=5, ge=1, le=100, description="Wrong passwords or codes per account before delays."
    )
    login_failure_window_seconds: int = Field(
        default=15 * 60, ge=60, le=86400, description="How long failures are remembered."
    )
    login_delay_base_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="The first delay; it doubles with every failure."
    )
    login_delay_max_seconds: float = Field(
        default=15 * 60, gt=0, le=86400, description="The longest delay."
    )
    audit_retention_days: int = Field(
        default=365, ge=1, le=3650, description="How long auth_events rows are kept."
    )
    trusted_proxies: str = Field(
        default="127.0.0.1/32,::1/128",
        description=(
            "Networks (CIDR, comma-separated) whose `x-nuell-client-address` header names the "
            "client; any other peer is the client itself."
        ),
    )

    # Argon2id; the defaults are OWASP's minimum, and lower values are refused.
    argon2_memory_kib: int = Field(default=19456, ge=19456, le=4 * 1024 * 1024)
    argon2_time_cost: int = Field(default=2, ge=2, le=20)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    password_hash_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=64,
        description="Threads hashing passwords in parallel (argon2 releases the GIL).",
    )

    # Accounts over email (docs/security.md, "Accounts over email").
    require_email_verification: bool = Field(
        default=True, description="Refuse sign-in until the account's email is verified."
    )
    public_url: str = Field(
        default="http://127.0.0.1:3000",
        pattern=r"^https?://[^\s?#]+$",
        description="The browser page's address, the start of every link in a mail.",
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description=(
            "smtp://host:port (STARTTLS where offered) or smtps://user:pass@host:465. "
            "Unset or empty: mails wait in the outbox and nothing is sent."
        ),
    )
    mail_from: str = Field(
        default="Nuell <no-reply@nuell.localhost>",
        min_length=3,
        description="The From header of every mail.",
    )
    mail_max_attempts: int = Field(default=8, ge=1, le=100)
    mail_retry_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="First retry delay; doubles on every attempt."
    )
    mail_throttle_seconds: int = Field(
        default=60, ge=0, le=86400, description="At most one mail per address and kind this often."
    )
    mail_throttle_per_hour: int = Field(default=5, ge=1, le=1000)
    default_locale: str = Field(default="en", pattern=r"^(ja|en)$")
    verify_email_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 86400)
    reset_password_ttl_seconds: int = Field(default=30 * 60, ge=60, le=86400)
    change_email_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400)

    # First start: create this admin when no admin exists yet (see README).
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: SecretStr | None = None

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

    @field_validator("smtp_url", mode="before")
    @classmethod
    def _empty_smtp_url_is_unset(cls, value: object) -> object:
        # `NUELL_SMTP_URL=` turns mail off even where a launcher supplies a default.
        return None if value == "" else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_is_smtp(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_smtp_url(value)
        return value

    @field_validator("totp_keys", mode="before")
    @classmethod
    def _empty_totp_keys_are_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("totp_keys")
    @classmethod
    def _totp_keys_are_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_signing_keys(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_are_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    @cached_property
    def totp_encryption_keys(self) -> dict[str, bytes]:
        """kid -> secret; empty when two-factor sign-in is not configured."""
        return {} if self.totp_keys is None else parse_signing_keys(self.totp_keys)

    @field_validator("jwt_keys")
    @classmethod
    def _jwt_keys_are_well_formed(cls, value: SecretStr) -> SecretStr:
        parse_signing_keys(value)
        return value

    @cached_property
    def signing_keys(self) -> dict[str, bytes]:
        """Key id to secret, in configuration order (the first signs)."""
        return parse_signing_keys(self.jwt_keys)

    @cached_property
    def smtp_server(self) -> SmtpServer | None:
        """The SMTP server to deliver to; None keeps mails in the outbox."""
        return None if self.smtp_url is None else parse_smtp_url(self.smtp_url)

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """The database URL with the async psycopg 3 driver selected."""
        url = make_url(self.database_url.get_secret_value())
        return url.set(drivername="postgresql+psycopg")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8,::1/128` (an address alone is a /32 or /128)."""
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in value.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise ValueError(f"not a list of networks: {exc}") from None


def parse_signing_keys(value: SecretStr) -> dict[str, bytes]:
    """Parse `kid:secret,kid:secret`; errors never quote a secret."""
    keys: dict[str, bytes] = {}
    for position, pair in enumerate(value.get_secret_value().split(","), start=1):
        kid, sep, secret = pair.strip().partition(":")
        if not sep or not kid or not secret:
            raise ValueError(f"key {position} is not of the form kid:secret")
        if kid in keys:
            raise ValueError(f"key id {kid!r} appears twice")
        if len(secret.encode()) < MIN_SIGNING_KEY_BYTES:
            raise ValueError(f"key {kid!r} is shorter than {MIN_SIGNING_KEY_BYTES} bytes")
        keys[kid] = secret.encode()
    return keys


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how mail is handed over (`NUELL_SMTP_URL`)."""

    host: str
    port: int
    # smtps: TLS from the first byte; smtp: STARTTLS when the server offers it.
    implicit_tls: bool
    username: str | None
    password: str | None


def parse_smtp_url(value: SecretStr) -> SmtpServer:
    """Parse `smtp://host:port` or `smtps://user:pass@host:port`; errors never quote it."""
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in {"smtp", "smtps"}:
        raise ValueError("must start with smtp:// or smtps://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if not parts.hostname or port is None or port == 0:
        raise ValueError("must name a host and a port")
    return SmtpServer(
        host=parts.hostname,
        port=port,
        implicit_tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def load_settings() -> Settings:
    """Read the settings from the environment (raises pydantic.ValidationError)."""
    return Settings()
