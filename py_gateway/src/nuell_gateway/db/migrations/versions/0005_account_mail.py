"""Accounts over email: verified addresses, locales, one-time tokens, a mail outbox.

Accounts made before verification existed are marked verified: they were
signing in before, and locking them out until they answer a mail they never
asked for would be unkind (they can still prove a new address by changing
it). New accounts start unverified. Existing accounts get the locale `en`,
the former language of everything.

`token_generation` joins role and activity on the `nuell_account_changed`
channel, so a bumped generation cuts access tokens in every process at once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PURPOSES = "('verify_email', 'reset_password', 'change_email')"
KINDS = (
    "('verify_email', 'reset_password', 'change_email', 'email_change_notice', "
    "'registration_attempt')"
)


def upgrade() -> None:
    # true for the rows there now, false for every row inserted from now on.
    op.add_column(
        "users", sa.Column("email_verified", sa.Boolean(), nullable=False, server_default="true")
    )
    op.alter_column("users", "email_verified", server_default=sa.text("false"))
    op.add_column("users", sa.Column("locale", sa.Text(), nullable=False, server_default="en"))
    op.add_column(
        "users", sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_check_constraint(op.f("ck_users_locale_known"), "users", "locale IN ('ja', 'en')")
    op.create_check_constraint(
        op.f("ck_users_token_generation_non_negative"), "users", "token_generation >= 0"
    )
    op.execute("DROP TRIGGER users_account_changed ON users")
    op.execute(
        """
        CREATE TRIGGER users_account_changed
        AFTER UPDATE OF role, is_active, token_generation OR DELETE ON users
        FOR EACH ROW EXECUTE FUNCTION nuell_account_changed()
        """
    )

    op.create_table(
        "one_time_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"purpose IN {PURPOSES}", name=op.f("ck_one_time_tokens_purpose_known")),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32", name=op.f("ck_one_time_tokens_token_hash_sha256")
        ),
        sa.CheckConstraint(
            "char_length(email) BETWEEN 3 AND 254", name=op.f("ck_one_time_tokens_email_length")
        ),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_one_time_tokens_expires_after_created")
        ),
        sa.CheckConstraint(
            "num_nonnulls(used_at, superseded_at) <= 1",
            name=op.f("ck_one_time_tokens_closed_once"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_one_time_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_one_time_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_one_time_tokens_token_hash")),
    )
    op.create_index(
        "uq_one_time_tokens_live",
        "one_time_tokens",
        ["user_id", "purpose"],
        unique=True,
        postgresql_where=sa.text("used_at IS NULL AND superseded_at IS NULL"),
    )

    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"kind IN {KINDS}", name=op.f("ck_mail_outbox_kind_known")),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed')", name=op.f("ck_mail_outbox_status_known")
        ),
        sa.CheckConstraint(
            "char_length(recipient) BETWEEN 3 AND 254",
            name=op.f("ck_mail_outbox_recipient_length"),
        ),
        sa.CheckConstraint(
            "message_id ~ '^<[^<>@[:space:]]+@[^<>@[:space:]]+>$'",
            name=op.f("ck_mail_outbox_message_id_shape"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_mail_outbox_attempts_non_negative")),
        sa.CheckConstraint(
            "(status = 'sent') = (sent_at IS NOT NULL)",
            name=op.f("ck_mail_outbox_sent_at_when_sent"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_mail_outbox_message_id")),
    )
    op.create_index(
        "ix_mail_outbox_due",
        "mail_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_mail_outbox_recipient",
        "mail_outbox",
        [sa.text("lower(recipient)"), "kind", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("mail_outbox")
    op.drop_table("one_time_tokens")
    op.execute("DROP TRIGGER users_account_changed ON users")
    op.execute(
        """
        CREATE TRIGGER users_account_changed
        AFTER UPDATE OF role, is_active OR DELETE ON users
        FOR EACH ROW EXECUTE FUNCTION nuell_account_changed()
        """
    )
    op.drop_constraint(op.f("ck_users_token_generation_non_negative"), "users", type_="check")
    op.drop_constraint(op.f("ck_users_locale_known"), "users", type_="check")
    op.drop_column("users", "token_generation")
    op.drop_column("users", "locale")
    op.drop_column("users", "email_verified")
