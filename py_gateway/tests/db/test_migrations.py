"""Migrations create exactly the models' schema, and the database enforces it."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from nuell_gateway.db.models import Base
from nuell_gateway.db.schema import (
    SchemaBehindError,
    alembic_config,
    ensure_schema_current,
    head_revision,
    upgrade_to_head,
)
from tests.utils.database import libpq, throwaway_database

ARGON2_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def test_migrated_schema_matches_the_models(database_url: URL) -> None:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_nothing_and_back(database_server: URL) -> None:
    from alembic import command

    with throwaway_database(database_server) as url:
        url = url.set(drivername="postgresql+psycopg")
        upgrade_to_head(url)
        command.downgrade(alembic_config(url), "base")
        with psycopg.connect(libpq(url)) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            ).fetchone()
        assert tables == (0,)
        upgrade_to_head(url)


async def test_schema_check_refuses_a_database_that_is_behind(database_server: URL) -> None:
    with throwaway_database(database_server) as url:
        engine = create_async_engine(url.set(drivername="postgresql+psycopg"))
        with pytest.raises(SchemaBehindError, match="make migrate"):
            await ensure_schema_current(engine)
        await engine.dispose()


async def test_schema_check_accepts_the_head(database_url: URL) -> None:
    engine = create_async_engine(database_url)
    await ensure_schema_current(engine)
    await engine.dispose()
    assert head_revision() == "0008"


async def test_schema_check_refuses_an_unknown_newer_revision(database_server: URL) -> None:
    with throwaway_database(database_server) as url:
        url = url.set(drivername="postgresql+psycopg")
        upgrade_to_head(url)
        with psycopg.connect(libpq(url)) as conn:
            conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
        engine = create_async_engine(url)
        with pytest.raises(SchemaBehindError, match="newer version"):
            await ensure_schema_current(engine)
        await engine.dispose()


def test_accounts_made_before_verification_existed_are_verified(database_server: URL) -> None:
    from alembic import command

    with throwaway_database(database_server) as url:
        url = url.set(drivername="postgresql+psycopg")
        command.upgrade(alembic_config(url), "0004")
        with psycopg.connect(libpq(url)) as conn:
            _insert_user(conn, "old@example.com")
        upgrade_to_head(url)
        with psycopg.connect(libpq(url)) as conn:
            _insert_user(conn, "new@example.com")
            rows = conn.execute(
                "SELECT email, email_verified, locale FROM users ORDER BY email"
            ).fetchall()
        assert rows == [("new@example.com", False, "en"), ("old@example.com", True, "en")]


def _insert_user(
    conn: psycopg.Connection[tuple[object, ...]], email: str, **columns: object
) -> None:
    values = {"id": uuid.uuid4(), "email": email, "hashed_password": ARGON2_HASH, **columns}
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    conn.execute(f"INSERT INTO users ({names}) VALUES ({marks})", list(values.values()))  # noqa: S608


@pytest.mark.usefixtures("empty_tables")
def test_email_is_unique_case_insensitively(database_url: URL) -> None:
    with psycopg.connect(libpq(database_url)) as conn:
        _insert_user(conn, "Ada@Example.com")
        with pytest.raises(psycopg.errors.UniqueViolation):
            _insert_user(conn, "ada@example.COM")


@pytest.mark.usefixtures("empty_tables")
@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"hashed_password": "plaintext"}, "ck_users_hashed_password_argon2id"),
        ({"role": "root"}, "ck_users_role_known"),
        ({"display_name": "x" * 65}, "ck_users_display_name_length"),
        ({"email": " padded@example.com "}, "ck_users_email_shape"),
        ({"locale": "fr"}, "ck_users_locale_known"),
        ({"locale": "JA"}, "ck_users_locale_known"),
        ({"token_generation": -1}, "ck_users_token_generation_non_negative"),
    ],
)
def test_user_constraints_hold_in_the_database(
    database_url: URL, columns: dict[str, object], constraint: str
) -> None:
    email = str(columns.pop("email", "ok@example.com"))
    with psycopg.connect(libpq(database_url)) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as caught:
            _insert_user(conn, email, **columns)
        assert caught.value.diag.constraint_name == constraint


@pytest.mark.usefixtures("empty_tables")
@pytest.mark.parametrize(
    ("columns", "error", "constraint"),
    [
        ({"content": ""}, psycopg.errors.CheckViolation, "ck_posts_content_length"),
        ({"content": "x" * 5001}, psycopg.errors.CheckViolation, "ck_posts_content_length"),
        ({"content": " \n\t "}, psycopg.errors.CheckViolation, "ck_posts_content_not_blank"),
        (
            {"analysis_state": "ready"},
            psycopg.errors.CheckViolation,
            "ck_posts_analysis_complete_when_ready",
        ),
        ({"user_id": uuid.uuid4()}, psycopg.errors.ForeignKeyViolation, "fk_posts_user_id_users"),
    ],
)
def test_post_constraints_hold_in_the_database(
    database_url: URL, columns: dict[str, object], error: type[Exception], constraint: str
) -> None:
    with psycopg.connect(libpq(database_url)) as conn:
        author = uuid.uuid4()
        _insert_user(conn, "author@example.com", id=author)
        values = {"id": uuid.uuid4(), "user_id": author, "content": "hello", **columns}
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        with pytest.raises(error) as caught:
            conn.execute(f"INSERT INTO posts ({names}) VALUES ({marks})", list(values.values()))  # noqa: S608
        assert caught.value.diag.constraint_name == constraint  # type: ignore[attr-defined]


@pytest.mark.usefixtures("empty_tables")
def test_one_live_token_per_account_and_purpose(database_url: URL) -> None:
    user_id = uuid.uuid4()
    insert = (
        "INSERT INTO one_time_tokens (id, user_id, purpose, token_hash, email, expires_at) "
        "VALUES (%s, %s, %s, %s, 'ada@example.com', now() + interval '1 hour')"
    )
    with psycopg.connect(libpq(database_url)) as conn:
        _insert_user(conn, "ada@example.com", id=user_id)
        conn.execute(insert, (uuid.uuid4(), user_id, "verify_email", b"a" * 32))
        conn.execute(insert, (uuid.uuid4(), user_id, "reset_password", b"b" * 32))
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            conn.execute(insert, (uuid.uuid4(), user_id, "verify_email", b"c" * 32))
        assert caught.value.diag.constraint_name == "uq_one_time_tokens_live"
    with psycopg.connect(libpq(database_url)) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as unknown:
            conn.execute(insert, (uuid.uuid4(), user_id, "login", b"d" * 32))
        assert unknown.value.diag.constraint_name == "ck_one_time_tokens_purpose_known"
    with psycopg.connect(libpq(database_url)) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as short:
            conn.execute(insert, (uuid.uuid4(), user_id, "verify_email", b"short"))
        assert short.value.diag.constraint_name == "ck_one_time_tokens_token_hash_sha256"


@pytest.mark.usefixtures("empty_tables")
@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"status": "queued"}, "ck_mail_outbox_status_known"),
        ({"kind": "newsletter"}, "ck_mail_outbox_kind_known"),
        ({"message_id": "no-angle-brackets@example.com"}, "ck_mail_outbox_message_id_shape"),
        ({"status": "sent"}, "ck_mail_outbox_sent_at_when_sent"),
        ({"attempts": -1}, "ck_mail_outbox_attempts_non_negative"),
    ],
)
def test_outbox_constraints_hold_in_the_database(
    database_url: URL, columns: dict[str, object], constraint: str
) -> None:
    values = {
        "id": uuid.uuid4(),
        "message_id": f"<{uuid.uuid4()}@nuell.test>",
        "kind": "verify_email",
        "recipient": "ada@example.com",
        "subject": "s",
        "body_text": "t",
        "body_html": "h",
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    statement = f"INSERT INTO mail_outbox ({names}) VALUES ({marks})"  # noqa: S608
    with psycopg.connect(libpq(database_url)) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as caught:
            conn.execute(statement, list(values.values()))
        assert caught.value.diag.constraint_name == constraint
