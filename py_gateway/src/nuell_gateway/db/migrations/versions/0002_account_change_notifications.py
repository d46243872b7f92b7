"""Announce changes of an account's role or activity on a NOTIFY channel.

Gateways cache each account's role and activity to spare a query per call;
this trigger tells every gateway process the moment one changes, whoever
changed it (an RPC, a migration, an operator's SQL).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION nuell_account_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('nuell_account_changed', COALESCE(NEW.id, OLD.id)::text);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_account_changed
        AFTER UPDATE OF role, is_active OR DELETE ON users
        FOR EACH ROW EXECUTE FUNCTION nuell_account_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER users_account_changed ON users")
    op.execute("DROP FUNCTION nuell_account_changed()")
