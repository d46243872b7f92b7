"""The tables, as typed SQLAlchemy 2 models.

Constraints live in the database as well as in the proto rules, so that no
client of these tables can break them. `migrations/` creates exactly this
schema; a test compares the two.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nuell_gateway.text_rules import CONTROL_CHARACTER, VISIBLE_CHARACTER

# Deterministic constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Shared with the proto rules (nuell.users.v1.User, nuell.posts.v1.Post).
EMAIL_MAX_CHARS = 254
DISPLAY_NAME_MAX_CHARS = 64
POST_CONTENT_MAX_CHARS = 5000
ROLES = ("user", "admin")
LOCALES = ("ja", "en")
# What a one-time token proves (account_mail.py) and the mails the outbox carries.
TOKEN_PURPOSES = ("verify_email", "reset_password", "change_email")
MAIL_KINDS = (
    "verify_email",
    "reset_password",
    "change_email",
    "email_change_notice",
    "registration_attempt",
)
MAIL_STATES = ("pending", "sent", "failed")
ANALYSIS_STATES = ("pending", "ready")
# Audit event types (nuell.sessions.v1.AuditEventType without its prefix, lowercased).
AUTH_EVENT_TYPES = (
    "sign_in_succeeded",
    "sign_in_failed",
    "sign_in_throttled",
    "mfa_passed",
    "mfa_failed",
    "refresh_reuse",
    "session_revoked",
    "password_changed",
    "password_reset",
    "email_verified",
    "email_changed",
    "totp_enrolled",
    "totp_disabled",
    "role_changed",
    "deactivated",
    "reactivated",
    "recovery_code_used",
)
USER_AGENT_MAX_CHARS = 256
# MinHash band keys stored per post (docs/compute-spec.md §13).
BANDS = 42


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _timestamp() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    """An account. Deactivation is a soft delete: rows are never removed."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str] = mapped_column(Text, server_default="")
    # Argon2id PHC string; never leaves the gateway.
    hashed_password: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text, server_default="user")
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()
    # Bumped on every change; the etag is derived from it.
    version: Mapped[int] = mapped_column(BigInteger, server_default="1")
    # True once a mail link sent to `email` was used (migration 0005 set it
    # for the accounts made before verification existed).
    email_verified: Mapped[bool] = mapped_column(server_default=text("false"))
    locale: Mapped[str] = mapped_column(Text, server_default="en")
    # Access tokens carry the generation they were issued under; a password
    # reset or an email change bumps it, so every older token stops at once.
    token_generation: Mapped[int] = mapped_column(Integer, server_default="0")
    # Two-factor sign-in is on (the secret is in `totp_factors`).
    totp_enabled: Mapped[bool] = mapped_column(server_default=text("false"))

    __table_args__ = (
        # Case-insensitive uniqueness without the citext extension.
        Index("uq_users_email_lower", func.lower(email), unique=True),
        CheckConstraint(
            f"char_length(email) BETWEEN 3 AND {EMAIL_MAX_CHARS} AND email = btrim(email)",
            name="email_shape",
        ),
        CheckConstraint(
            f"char_length(display_name) <= {DISPLAY_NAME_MAX_CHARS}", name="display_name_length"
        ),
        # The contract's display_name rules (nuell.text.v1), the very same classes.
        CheckConstraint(
            f"display_name = '' OR display_name ~ '{VISIBLE_CHARACTER}'",
            name="display_name_not_blank",
        ),
        CheckConstraint(f"display_name !~ '{CONTROL_CHARACTER}'", name="display_name_plain"),
        CheckConstraint("display_name IS NFC NORMALIZED", name="display_name_nfc"),
        CheckConstraint("hashed_password LIKE '$argon2id$%'", name="hashed_password_argon2id"),
        CheckConstraint(f"role IN {ROLES!r}", name="role_known"),
        CheckConstraint("updated_at >= created_at", name="updated_after_created"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(f"locale IN {LOCALES!r}", name="locale_known"),
        CheckConstraint("token_generation >= 0", name="token_generation_non_negative"),
    )


class OneTimeToken(Base):
    """A token mailed in a link, stored only as the SHA-256 of its value.

    Bound to its purpose and to the address it was sent to. Single use
    (`used_at`); a newer token of the same purpose for the same account
    supersedes it (`superseded_at`), so at most one is live per account and
    purpose.
    """

    __tablename__ = "one_time_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    email: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _timestamp()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "uq_one_time_tokens_live",
            "user_id",
            "purpose",
            unique=True,
            postgresql_where=text("used_at IS NULL AND superseded_at IS NULL"),
        ),
        CheckConstraint(f"purpose IN {TOKEN_PURPOSES!r}", name="purpose_known"),
        CheckConstraint("octet_length(token_hash) = 32", name="token_hash_sha256"),
        CheckConstraint(f"char_length(email) BETWEEN 3 AND {EMAIL_MAX_CHARS}", name="email_length"),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
        CheckConstraint("num_nonnulls(used_at, superseded_at) <= 1", name="closed_once"),
    )


class MailOutbox(Base):
    """A mail to send, written in the same transaction as what it announces.

    The sender (mail.py) claims due rows with FOR UPDATE SKIP LOCKED, so
    gateway processes never send one row twice; `message_id` is fixed at
    insert, so a retry is the same message to the receiving servers. The
    bodies (they hold links with tokens) are emptied once the row is sent
    or has failed for good.
    """

    __tablename__ = "mail_outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = _timestamp()
    next_attempt_at: Mapped[datetime] = _timestamp()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_mail_outbox_due",
            next_attempt_at,
            postgresql_where=text("status = 'pending'"),
        ),
        # Throttling counts recent mails per address and kind.
        Index("ix_mail_outbox_recipient", func.lower(recipient), kind, created_at),
        CheckConstraint(f"kind IN {MAIL_KINDS!r}", name="kind_known"),
        CheckConstraint(f"status IN {MAIL_STATES!r}", name="status_known"),
        CheckConstraint(
            f"char_length(recipient) BETWEEN 3 AND {EMAIL_MAX_CHARS}", name="recipient_length"
        ),
        CheckConstraint(
            "message_id ~ '^<[^<>@[:space:]]+@[^<>@[:space:]]+>$'", name="message_id_shape"
        ),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint("(status = 'sent') = (sent_at IS NOT NULL)", name="sent_at_when_sent"),
    )


class AuthSession(Base):
    """A sign-in session: one Login's refresh-token family and its access tokens.

    Access tokens carry the id as `sid`. Ending it (`revoked_at`) stops them
    all: a trigger (migration 0008) announces the id on the account cache's
    channel, and every gateway process forgets it at once.
    """

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = _timestamp()
    last_used_at: Mapped[datetime] = _timestamp()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user_agent: Mapped[str] = mapped_column(Text, server_default="")
    ip_address: Mapped[str] = mapped_column(Text, server_default="")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # ListSessions: an account's live sessions, newest first.
        Index(
            "ix_auth_sessions_live",
            "user_id",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
        CheckConstraint(
            f"char_length(user_agent) <= {USER_AGENT_MAX_CHARS}", name="user_agent_length"
        ),
        CheckConstraint("char_length(ip_address) <= 45", name="ip_address_length"),
        CheckConstraint(
            "(revoked_at IS NULL) = (revoke_reason IS NULL)", name="revoked_with_reason"
        ),
    )


class RefreshToken(Base):
    """A refresh token, stored only as the SHA-256 of its opaque value.

    The tokens of one session form a family; rotation spends a token
    (`used_at`) and issues its successor in the same family. Reuse of a
    spent token after the grace ends the session (`auth_sessions`).
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("auth_sessions.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = _timestamp()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_refresh_tokens_family_id", "family_id"),
        Index("ix_refresh_tokens_user_id", "user_id"),
        CheckConstraint("octet_length(token_hash) = 32", name="token_hash_sha256"),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
    )


class TotpFactor(Base):
    """An account's TOTP secret, encrypted (AES-GCM under a NUELL_TOTP_KEYS key).

    `confirmed_at` is NULL between EnrollTotp and ConfirmTotp: the factor is
    asked for at sign-in only once confirmed. `last_step` is the 30-second
    step of the last accepted code, so no code is accepted twice.
    """

    __tablename__ = "totp_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(Text)
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _timestamp()
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_step: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # 12-byte nonce + the 20-byte secret + 16-byte tag.
        CheckConstraint("octet_length(secret_ciphertext) >= 28", name="ciphertext_shape"),
    )


class RecoveryCode(Base):
    """A single-use recovery code, stored only as the SHA-256 of its 80 random bits."""

    __tablename__ = "recovery_codes"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    code_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("octet_length(code_hash) = 32", name="code_hash_sha256"),)


class MfaChallenge(Base):
    """A password sign-in waiting for its second factor (Login's `mfa_token`)."""

    __tablename__ = "mfa_challenges"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = _timestamp()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("octet_length(token_hash) = 32", name="token_hash_sha256"),
        CheckConstraint("failures >= 0", name="failures_non_negative"),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
    )


class SignInThrottle(Base):
    """Recent wrong passwords and codes of one account (or one unknown address).

    `subject` is the account id, or `email:` and the SHA-256 of an address
    with no account, so unknown addresses are throttled alike without being
    stored.
    """

    __tablename__ = "sign_in_throttles"

    subject: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("failures >= 1", name="failures_positive"),
        CheckConstraint("char_length(subject) <= 80", name="subject_length"),
    )


class AuthEvent(Base):
    """The audit trail: append-only (a trigger refuses UPDATE), pruned by age."""

    __tablename__ = "auth_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = _timestamp()
    type: Mapped[str] = mapped_column(Text)
    # The account concerned; NULL for a failed sign-in with an unknown address.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    actor_id: Mapped[uuid.UUID | None]
    session_id: Mapped[uuid.UUID | None]
    ip_address: Mapped[str] = mapped_column(Text, server_default="")
    user_agent: Mapped[str] = mapped_column(Text, server_default="")
    reason: Mapped[str] = mapped_column(Text, server_default="")

    __table_args__ = (
        Index("ix_auth_events_user", "user_id", text("created_at DESC"), text("id DESC")),
        Index("ix_auth_events_created_at", "created_at"),
        CheckConstraint(f"type IN {AUTH_EVENT_TYPES!r}", name="type_known"),
        CheckConstraint(
            f"char_length(user_agent) <= {USER_AGENT_MAX_CHARS}", name="user_agent_length"
        ),
        CheckConstraint("char_length(ip_address) <= 45", name="ip_address_length"),
        CheckConstraint("reason ~ '^[a-z_>-]{0,40}$'", name="reason_shape"),
    )


class Post(Base):
    """A post with the analysis of its current content."""

    __tablename__ = "posts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()
    version: Mapped[int] = mapped_column(BigInteger, server_default="1")
    analysis_state: Mapped[str] = mapped_column(Text, server_default="pending")
    word_count: Mapped[int | None] = mapped_column(Integer)
    reading_time_seconds: Mapped[int | None] = mapped_column(Integer)
    # The unsigned 64-bit SimHash stored in a signed bigint (same bits).
    simhash: Mapped[int | None] = mapped_column(BigInteger)
    # The search index of the current content, built from rust_compute's
    # tokens (docs/posts.md, "Search"); NULL until the content is indexed.
    search_vector: Mapped[str | None] = mapped_column(TSVECTOR)

    __table_args__ = (
        # Newest-first feeds, global and per author, walked by keyset.
        Index("ix_posts_feed", created_at.desc(), id.desc()),
        Index("ix_posts_author_feed", user_id, created_at.desc(), id.desc()),
        # Small: only the posts whose analysis the backfill still owes.
        Index(
            "ix_posts_analysis_pending",
            created_at,
            postgresql_where=text("analysis_state = 'pending'"),
        ),
        CheckConstraint(
            f"char_length(content) BETWEEN 1 AND {POST_CONTENT_MAX_CHARS}", name="content_length"
        ),
        # The contract's not-blank rule (nuell.text.v1.visible), the very same class.
        CheckConstraint(f"content ~ '{VISIBLE_CHARACTER}'", name="content_not_blank"),
        CheckConstraint("updated_at >= created_at", name="updated_after_created"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(f"analysis_state IN {ANALYSIS_STATES!r}", name="analysis_state_known"),
        CheckConstraint(
            "(analysis_state = 'ready') = (word_count IS NOT NULL "
            "AND reading_time_seconds IS NOT NULL AND simhash IS NOT NULL)",
            name="analysis_complete_when_ready",
        ),
        CheckConstraint(
            "word_count >= 0 AND reading_time_seconds >= 0", name="analysis_counts_non_negative"
        ),
        # Search: the GIN index answers every query; the partial index lists
        # the posts the backfill still has to index.
        Index("ix_posts_search_vector", search_vector, postgresql_using="gin"),
        Index(
            "ix_posts_search_pending",
            created_at,
            postgresql_where=text("search_vector IS NULL"),
        ),
        CheckConstraint(
            "analysis_state = 'ready' OR search_vector IS NULL", name="search_vector_when_ready"
        ),
    )


class PostBandKey(Base):
    """The MinHash LSH band keys of a post's current content (ListSimilarPosts).

    One row per post with shingles: its 42 band keys as one array, each
    element the band's number in the top 6 bits and the band's key in the
    other 58, so one GIN index answers "which posts share a (band, key)".
    Posts that do are candidates, verified by exact Jaccard before anyone
    sees them. One row of 42 elements takes about a third of the space of
    42 rows under two B-trees (docs/posts.md).
    """

    __tablename__ = "post_band_keys"

    post_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    keys: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))

    __table_args__ = (
        Index("ix_post_band_keys_keys", keys, postgresql_using="gin"),
        CheckConstraint(f"cardinality(keys) = {BANDS}", name="one_key_per_band"),
    )


POST_EVENT_TYPES = ("created", "updated", "deleted", "analyzed")


class PostEvent(Base):
    """One change of a post, written by a trigger on `posts` in the change's
    own transaction (migration 0006); WatchPosts reads it (post_events.py).
    `seq` is commit order; the post columns are the post right after the
    change, NULL for a deletion."""

    __tablename__ = "post_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(Text)
    post_id: Mapped[uuid.UUID] = mapped_column()
    user_id: Mapped[uuid.UUID] = mapped_column()
    content: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int | None] = mapped_column(BigInteger)
    analysis_state: Mapped[str | None] = mapped_column(Text)
    word_count: Mapped[int | None] = mapped_column(Integer)
    reading_time_seconds: Mapped[int | None] = mapped_column(Integer)
    simhash: Mapped[int | None] = mapped_column(BigInteger)
    event_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )

    __table_args__ = (
        Index("ix_post_events_event_time", event_time),
        CheckConstraint(f"type IN {POST_EVENT_TYPES!r}", name="type_known"),
        CheckConstraint("(type = 'deleted') = (content IS NULL)", name="post_unless_deleted"),
    )
