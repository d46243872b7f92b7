"""Search: a tsvector per post (GIN) and the posts' MinHash band keys (GIN over an array).

Both are written by the gateway from rust_compute's tokens together with the
post's analysis (docs/posts.md, "Search"). Existing posts start unindexed
(`search_vector` NULL, no band keys); the analysis backfill indexes them,
oldest first, through `ix_posts_search_pending`. Adding a NULL column and
empty indexes is instant, whatever the table's size.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BANDS = 42


def upgrade() -> None:
    op.add_column("posts", sa.Column("search_vector", postgresql.TSVECTOR(), nullable=True))
    op.create_index("ix_posts_search_vector", "posts", ["search_vector"], postgresql_using="gin")
    op.create_index(
        "ix_posts_search_pending",
        "posts",
        ["created_at"],
        postgresql_where=sa.text("search_vector IS NULL"),
    )
    op.create_check_constraint(
        "ck_posts_search_vector_when_ready",
        "posts",
        "analysis_state = 'ready' OR search_vector IS NULL",
    )
    op.create_table(
        "post_band_keys",
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("keys", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name="fk_post_band_keys_post_id_posts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("post_id", name="pk_post_band_keys"),
        sa.CheckConstraint(
            f"cardinality(keys) = {BANDS}", name="ck_post_band_keys_one_key_per_band"
        ),
    )
    op.create_index("ix_post_band_keys_keys", "post_band_keys", ["keys"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_table("post_band_keys")
    op.drop_constraint("ck_posts_search_vector_when_ready", "posts", type_="check")
    op.drop_index("ix_posts_search_pending", table_name="posts")
    op.drop_index("ix_posts_search_vector", table_name="posts")
    op.drop_column("posts", "search_vector")
