"""Sessions, two-factor sign-in, per-account throttling and the audit trail.

Each refresh-token family becomes a row of `auth_sessions` (the families
alive now included, so nobody is signed out by the upgrade); `refresh_tokens`
loses `revoked_at`, since ending the session is what revokes its tokens.
Ending a session sends its id on `nuell_account_changed`, the channel the
account cache already listens to, so every gateway process stops its access
tokens at once. `auth_events` is append-only: a trigger refuses UPDATE.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# As written by this revision (later ones may add kinds).
EVENT_TYPES = (
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


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("totp_enabled", sa.Boolean(), nullable=False, server_default="false")
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        _timestamp("created_at"),
        _timestamp("last_used_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent", sa.Text(), server_default="", nullable=False),
        sa.Column("ip_address", sa.Text(), server_default="", nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "char_length(user_agent) <= 256", name=op.f("ck_auth_sessions_user_agent_length")
        ),
        sa.CheckConstraint(
            "char_length(ip_address) <= 45", name=op.f("ck_auth_sessions_ip_address_length")
        ),
        sa.CheckConstraint(
            "(revoked_at IS NULL) = (revoke_reason IS NULL)",
            name=op.f("ck_auth_sessions_revoked_with_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    op.execute(
        "CREATE INDEX ix_auth_sessions_live ON auth_sessions (user_id, created_at DESC, id DESC) "
        "WHERE revoked_at IS NULL"
    )
    # One session per existing family, ended if every token of it was revoked.
    op.execute(
        """
        INSERT INTO auth_sessions (id, user_id, created_at, last_used_at, expires_at,
                                   revoked_at, revoke_reason)
        SELECT family_id, min(user_id::text)::uuid, min(created_at),
               max(coalesce(used_at, created_at)), max(expires_at),
               CASE WHEN bool_and(revoked_at IS NOT NULL) THEN max(revoked_at) END,
               CASE WHEN bool_and(revoked_at IS NOT NULL) THEN 'logout' END
        FROM refresh_tokens GROUP BY family_id
        """
    )
    op.drop_column("refresh_tokens", "revoked_at")
    op.create_foreign_key(
        op.f("fk_refresh_tokens_family_id_auth_sessions"),
        "refresh_tokens",
        "auth_sessions",
        ["family_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.execute(
        """
        CREATE TRIGGER auth_sessions_revoked
        AFTER UPDATE OF revoked_at OR DELETE ON auth_sessions
        FOR EACH ROW EXECUTE FUNCTION nuell_account_changed()
        """
    )

    op.create_table(
        "totp_factors",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=False),
        _timestamp("created_at"),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "octet_length(secret_ciphertext) >= 28", name=op.f("ck_totp_factors_ciphertext_shape")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_totp_factors_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_totp_factors")),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "octet_length(code_hash) = 32", name=op.f("ck_recovery_codes_code_hash_sha256")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_recovery_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "code_hash", name=op.f("pk_recovery_codes")),
    )
    op.create_table(
        "mfa_challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        _timestamp("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32", name=op.f("ck_mfa_challenges_token_hash_sha256")
        ),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_mfa_challenges_failures_non_negative")),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_mfa_challenges_expires_after_created")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_mfa_challenges_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_challenges")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_mfa_challenges_token_hash")),
    )
    op.create_table(
        "sign_in_throttles",
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("failures >= 1", name=op.f("ck_sign_in_throttles_failures_positive")),
        sa.CheckConstraint(
            "char_length(subject) <= 80", name=op.f("ck_sign_in_throttles_subject_length")
        ),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_sign_in_throttles")),
    )
    op.create_table(
        "auth_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        _timestamp("created_at"),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("ip_address", sa.Text(), server_default="", nullable=False),
        sa.Column("user_agent", sa.Text(), server_default="", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint(f"type IN {EVENT_TYPES!r}", name=op.f("ck_auth_events_type_known")),
        sa.CheckConstraint(
            "char_length(user_agent) <= 256", name=op.f("ck_auth_events_user_agent_length")
        ),
        sa.CheckConstraint(
            "char_length(ip_address) <= 45", name=op.f("ck_auth_events_ip_address_length")
        ),
        sa.CheckConstraint("reason ~ '^[a-z_>-]{0,40}$'", name=op.f("ck_auth_events_reason_shape")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_auth_events_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_events")),
    )
    op.execute(
        "CREATE INDEX ix_auth_events_user ON auth_events (user_id, created_at DESC, id DESC)"
    )
    op.create_index("ix_auth_events_created_at", "auth_events", ["created_at"])
    op.execute(
        """
        CREATE FUNCTION nuell_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'auth_events is append-only' USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER auth_events_append_only BEFORE UPDATE ON auth_events "
        "FOR EACH ROW EXECUTE FUNCTION nuell_append_only()"
    )


def downgrade() -> None:
    op.drop_table("auth_events")
    op.execute("DROP FUNCTION nuell_append_only()")
    op.drop_table("sign_in_throttles")
    op.drop_table("mfa_challenges")
    op.drop_table("recovery_codes")
    op.drop_table("totp_factors")
    op.drop_constraint(
        op.f("fk_refresh_tokens_family_id_auth_sessions"), "refresh_tokens", type_="foreignkey"
    )
    op.add_column(
        "refresh_tokens", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(
        "UPDATE refresh_tokens t SET revoked_at = s.revoked_at FROM auth_sessions s "
        "WHERE s.id = t.family_id"
    )
    op.drop_table("auth_sessions")
    op.drop_column("users", "totp_enabled")
