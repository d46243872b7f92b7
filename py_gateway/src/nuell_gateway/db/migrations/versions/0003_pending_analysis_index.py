"""Index the posts whose analysis is still pending, for the backfill.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_posts_analysis_pending",
        "posts",
        ["created_at"],
        postgresql_where=sa.text("analysis_state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_posts_analysis_pending", table_name="posts")
