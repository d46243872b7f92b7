"""The post event log behind WatchPosts: every change of a post, in commit order.

A trigger on `posts` writes one row per change in the same transaction as
the change, with the post as it was right after it, so a watcher can resume
from any event within the retention and miss nothing. Each row's `seq` is
taken under a transaction-level advisory lock that is held until commit:
events commit in `seq` order, so a reader that has seen `seq` N has seen
every event up to N (no later commit can fill a hole behind it). The
trigger is deferred to the commit, so the lock is held for the commit alone,
never across a round trip to the client that is still in its transaction.
NOTIFY only wakes the readers; the rows are the truth.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TYPES = "('created', 'updated', 'deleted', 'analyzed')"


def upgrade() -> None:
    op.execute("CREATE SEQUENCE post_events_seq AS bigint")
    op.create_table(
        "post_events",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("post_id", postgresql.UUID(), nullable=False),
        sa.Column("user_id", postgresql.UUID(), nullable=False),
        # The post right after the change; NULL for a deletion.
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("analysis_state", sa.Text(), nullable=True),
        sa.Column("word_count", sa.Integer(), nullable=True),
        sa.Column("reading_time_seconds", sa.Integer(), nullable=True),
        sa.Column("simhash", sa.BigInteger(), nullable=True),
        sa.Column(
            "event_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.CheckConstraint(f"type IN {TYPES}", name=op.f("ck_post_events_type_known")),
        sa.CheckConstraint(
            "(type = 'deleted') = (content IS NULL)",
            name=op.f("ck_post_events_post_unless_deleted"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_post_events")),
    )
    # Retention: the oldest rows go first.
    op.create_index("ix_post_events_event_time", "post_events", ["event_time"])
    op.execute(
        """
        CREATE FUNCTION nuell_post_event() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            kind text;
            post posts;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                kind := 'created'; post := NEW;
            ELSIF TG_OP = 'DELETE' THEN
                kind := 'deleted'; post := OLD;
            ELSIF NEW.content IS DISTINCT FROM OLD.content THEN
                kind := 'updated'; post := NEW;
            ELSIF NEW.analysis_state IS DISTINCT FROM OLD.analysis_state
                  AND NEW.analysis_state <> 'pending' THEN
                kind := 'analyzed'; post := NEW;
            ELSE
                RETURN NULL;  -- nothing a watcher can see changed
            END IF;
            -- Held until commit: seq order is commit order (module docstring).
            PERFORM pg_advisory_xact_lock(hashtext('nuell_post_events'));
            IF kind = 'deleted' THEN
                INSERT INTO post_events (seq, type, post_id, user_id)
                VALUES (nextval('post_events_seq'), kind, post.id, post.user_id);
            ELSE
                INSERT INTO post_events (seq, type, post_id, user_id, content, created_at,
                    updated_at, version, analysis_state, word_count, reading_time_seconds, simhash)
                VALUES (nextval('post_events_seq'), kind, post.id, post.user_id, post.content,
                    post.created_at, post.updated_at, post.version, post.analysis_state,
                    post.word_count, post.reading_time_seconds, post.simhash);
            END IF;
            PERFORM pg_notify('nuell_post_events', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER posts_post_event
        AFTER INSERT OR UPDATE OR DELETE ON posts
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION nuell_post_event()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER posts_post_event ON posts")
    op.execute("DROP FUNCTION nuell_post_event()")
    op.drop_table("post_events")
    op.execute("DROP SEQUENCE post_events_seq")
