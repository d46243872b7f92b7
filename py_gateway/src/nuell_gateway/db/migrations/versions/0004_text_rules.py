"""The contract's text rules (nuell.text.v1) as CHECK constraints.

Post content must contain a visible character by the contract's own class,
not `[^[:space:]]`: content of only vertical tabs, U+0085 or zero-width
characters passed one layer and not the other. Display names must show
something, hold no control, line-break or bidi/format character, and be in
NFC.

Display names that break the new rules are cleaned (forbidden characters
removed, NFC applied, a name left blank emptied) and their accounts'
versions bumped. Posts are the authors' words and are not rewritten: the
new content rule is checked for every write at once, and validated for the
rows already there only when none of them is blank by the new rule;
otherwise it stays NOT VALID (still enforced on writes) and those posts can
be found with `SELECT id FROM posts WHERE content !~ '<VISIBLE>'`.

The classes are copied here as they are in proto/nuell/text/v1/text_rules.proto
today, so this migration means the same thing whatever the contract
becomes; tests/db/test_constraints.py checks the live database
against the contract.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VISIBLE = (
    r"[^\u0001-\u0020\u007F-\u00A0\u00AD\u034F\u0600-\u0605\u061C\u06DD"
    r"\u070F\u0890-\u0891\u08E2\u115F-\u1160\u1680\u17B4-\u17B5"
    r"\u180B-\u180F\u2000-\u200F\u2028-\u202F\u205F-\u206F\u3000\u3164"
    r"\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFFB\U000110BD\U000110CD"
    r"\U00013430-\U0001343F\U0001BCA0-\U0001BCA3\U0001D173-\U0001D17A"
    r"\U000E0000-\U000E0FFF]"
)
CONTROL = (
    r"[\u0001-\u001F\u007F-\u009F\u00AD\u0600-\u0605\u061C\u06DD\u070F"
    r"\u0890-\u0891\u08E2\u180E\u200B\u200E-\u200F\u2028-\u202E"
    r"\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB\U000110BD\U000110CD"
    r"\U00013430-\U0001343F\U0001BCA0-\U0001BCA3\U0001D173-\U0001D17A"
    r"\U000E0001\U000E0020-\U000E007F]"
)


# Every statement below is built from the constant classes above only.


def upgrade() -> None:
    op.execute(
        f"""
        WITH cleaned AS (
            SELECT id, normalize(regexp_replace(display_name, '{CONTROL}', '', 'g'), NFC) AS name
            FROM users
        ), named AS (
            SELECT id, CASE WHEN name ~ '{VISIBLE}' THEN left(name, 64) ELSE '' END AS name
            FROM cleaned
        )
        UPDATE users SET display_name = named.name, version = users.version + 1,
            updated_at = greatest(now(), users.updated_at)
        FROM named
        WHERE named.id = users.id AND named.name <> users.display_name
        """  # noqa: S608
    )
    op.create_check_constraint(
        op.f("ck_users_display_name_not_blank"),
        "users",
        f"display_name = '' OR display_name ~ '{VISIBLE}'",
    )
    op.create_check_constraint(
        op.f("ck_users_display_name_plain"), "users", f"display_name !~ '{CONTROL}'"
    )
    op.create_check_constraint(
        op.f("ck_users_display_name_nfc"), "users", "display_name IS NFC NORMALIZED"
    )

    op.drop_constraint(op.f("ck_posts_content_not_blank"), "posts", type_="check")
    op.execute(
        "ALTER TABLE posts ADD CONSTRAINT ck_posts_content_not_blank "
        f"CHECK (content ~ '{VISIBLE}') NOT VALID"
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM posts WHERE content !~ '{VISIBLE}') THEN
                ALTER TABLE posts VALIDATE CONSTRAINT ck_posts_content_not_blank;
            END IF;
        END
        $$
        """  # noqa: S608
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_posts_content_not_blank"), "posts", type_="check")
    # Every content the new rule accepts has a character outside [:space:].
    op.create_check_constraint(
        op.f("ck_posts_content_not_blank"), "posts", "content ~ '[^[:space:]]'"
    )
    op.drop_constraint(op.f("ck_users_display_name_nfc"), "users", type_="check")
    op.drop_constraint(op.f("ck_users_display_name_plain"), "users", type_="check")
    op.drop_constraint(op.f("ck_users_display_name_not_blank"), "users", type_="check")
