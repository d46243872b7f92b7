"""Users, refresh tokens and posts.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), server_default="", nullable=False),
        sa.Column("hashed_password", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), server_default="user", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.CheckConstraint(
            "char_length(email) BETWEEN 3 AND 254 AND email = btrim(email)",
            name=op.f("ck_users_email_shape"),
        ),
        sa.CheckConstraint(
            "char_length(display_name) <= 64", name=op.f("ck_users_display_name_length")
        ),
        sa.CheckConstraint(
            "hashed_password LIKE '$argon2id$%'", name=op.f("ck_users_hashed_password_argon2id")
        ),
        sa.CheckConstraint("role IN ('user', 'admin')", name=op.f("ck_users_role_known")),
        sa.CheckConstraint("updated_at >= created_at", name=op.f("ck_users_updated_after_created")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_users_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32", name=op.f("ck_refresh_tokens_token_hash_sha256")
        ),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_refresh_tokens_expires_after_created")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_refresh_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])

    op.create_table(
        "posts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("analysis_state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("word_count", sa.Integer(), nullable=True),
        sa.Column("reading_time_seconds", sa.Integer(), nullable=True),
        sa.Column("simhash", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "char_length(content) BETWEEN 1 AND 5000", name=op.f("ck_posts_content_length")
        ),
        sa.CheckConstraint("content ~ '[^[:space:]]'", name=op.f("ck_posts_content_not_blank")),
        sa.CheckConstraint("updated_at >= created_at", name=op.f("ck_posts_updated_after_created")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_posts_version_positive")),
        sa.CheckConstraint(
            "analysis_state IN ('pending', 'ready')", name=op.f("ck_posts_analysis_state_known")
        ),
        sa.CheckConstraint(
            "(analysis_state = 'ready') = (word_count IS NOT NULL "
            "AND reading_time_seconds IS NOT NULL AND simhash IS NOT NULL)",
            name=op.f("ck_posts_analysis_complete_when_ready"),
        ),
        sa.CheckConstraint(
            "word_count >= 0 AND reading_time_seconds >= 0",
            name=op.f("ck_posts_analysis_counts_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_posts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posts")),
    )
    op.create_index("ix_posts_feed", "posts", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index(
        "ix_posts_author_feed",
        "posts",
        ["user_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )


def downgrade() -> None:
    op.drop_table("posts")
    op.drop_table("refresh_tokens")
    op.drop_table("users")
