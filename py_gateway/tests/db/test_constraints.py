# ruff: noqa: RUF001 - Japanese text has full-width look-alikes on purpose
"""The contract's text rules and the database's CHECKs are one definition.

For every string drawn from Unicode's separators, controls, format
characters and default-ignorable code points, mixed with Japanese text, the
protovalidate rule and the real database give the same verdict. A violation
that slips past validation anyway is a clear status with details, and its
log line carries no content.
"""

from __future__ import annotations

import logging
import sys
import unicodedata
import uuid
from collections.abc import Iterator
from functools import cache
from typing import Literal

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as posts_pb
from nuell.users.v1 import user_pb2
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from nuell_gateway import text_rules
from nuell_gateway.db.engine import create_session_factory
from nuell_gateway.db.integrity import refused_write
from nuell_gateway.db.models import Post
from nuell_gateway.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from nuell_gateway.validation import _validator
from tests.utils.database import libpq
from tests.utils.factories import hash_of, make_user

INVISIBLE_CATEGORIES: tuple[Literal["Zs", "Zl", "Zp", "Cc", "Cf"], ...] = (
    "Zs",
    "Zl",
    "Zp",
    "Cc",
    "Cf",
)
# Default_Ignorable_Code_Point characters outside those categories (Lo, Mn).
DEFAULT_IGNORABLE = "\u034f\u115f\u1160\u17b4\u17b5\u180b\u3164\ufe00\ufe0f\uffa0\U000e0100"
# Shown, and mixed in: kana, kanji, full-width and half-width forms, punctuation.
JAPANESE = "こんにちはカタカナ漢字東京ｶﾅＡ１ー。、「」！"


@cache
def invisible_code_points() -> frozenset[str]:
    """Every character the contract calls invisible that this Python knows (NUL aside)."""
    found = {
        chr(cp)
        for cp in range(1, sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in INVISIBLE_CATEGORIES
    }
    return frozenset(found | set(DEFAULT_IGNORABLE))


invisible = st.one_of(
    st.characters(categories=INVISIBLE_CATEGORIES, exclude_characters="\x00"),
    st.sampled_from(DEFAULT_IGNORABLE),
)
blank_text = st.text(invisible, min_size=1, max_size=12)
mixed_text = st.text(st.one_of(invisible, st.sampled_from(JAPANESE)), min_size=1, max_size=12)


# An author in a transaction that is rolled back, and its connection.
Db = tuple[psycopg.Connection[tuple[object, ...]], uuid.UUID]
# Each example is a statement on the real database: no deadline on a busy machine.
AGAINST_THE_DATABASE = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _contract_refuses(message: object, field: str, rule_id: str) -> bool:
    return any(
        v.proto.rule_id == rule_id
        and v.proto.field is not None
        and v.proto.field.elements[-1].field_name == field
        for v in _validator.collect_violations(message)  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def db(database_url: URL) -> Iterator[Db]:
    """A connection inside a transaction that is rolled back, and an author in it."""
    with psycopg.connect(libpq(database_url)) as conn:
        author = uuid.uuid4()
        conn.execute(
            "INSERT INTO users (id, email, hashed_password) VALUES (%s, %s, %s)",
            (author, f"{author.hex}@example.com", hash_of("Correct-Horse-42")),
        )
        yield conn, author
        conn.rollback()


def _refused_by(
    conn: psycopg.Connection[tuple[object, ...]], sql: str, params: tuple[object, ...]
) -> str | None:
    """The CHECK constraint that refuses the statement, or None if it is accepted."""
    try:
        with conn.transaction():  # a savepoint: nothing stays
            conn.execute(sql, params)
            raise _Accepted
    except _Accepted:
        return None
    except psycopg.errors.CheckViolation as exc:
        return exc.diag.constraint_name


class _Accepted(Exception):
    pass


def _database_refuses_content(db: Db, content: str) -> bool:
    conn, author = db
    refused = _refused_by(
        conn,
        "INSERT INTO posts (id, user_id, content) VALUES (%s, %s, %s)",
        (uuid.uuid4(), author, content),
    )
    assert refused in (None, "ck_posts_content_not_blank"), refused
    return refused is not None


def _database_refuses_name(db: Db, name: str) -> str | None:
    conn, author = db
    return _refused_by(conn, "UPDATE users SET display_name = %s WHERE id = %s", (name, author))


# ----------------------------------------------------------- post content


@AGAINST_THE_DATABASE
@given(content=st.one_of(blank_text, mixed_text))
@example(content="\x0b")
@example(content="\x0b\x0b\x0b")
@example(content="\u0085\u00a0\u180e\u200b\u200c\u200d\u2028\u2029\ufeff")
@example(content="\u200b")
@example(content="\u3000こんにちは")
@example(content="こんにちは\u200b")
def test_contract_and_database_agree_on_blank_content(db: Db, content: str) -> None:
    contract = _contract_refuses(
        posts_pb.CreatePostRequest(content=content), "content", "content.not_blank"
    )
    assert contract == _contract_refuses(
        post_pb2.Post(content=content), "content", "content.not_blank"
    )
    assert contract == _database_refuses_content(db, content)
    assert contract == (set(content) <= invisible_code_points())


def test_every_invisible_character_alone_is_blank_to_both(
    db: Db,
) -> None:
    characters = sorted(invisible_code_points())
    assert len(characters) > 200
    for ch in characters:
        request = posts_pb.CreatePostRequest(content=ch)
        assert _contract_refuses(request, "content", "content.not_blank"), f"U+{ord(ch):04X}"
        assert _database_refuses_content(db, ch), f"U+{ord(ch):04X}"


@pytest.mark.parametrize(
    "content",
    [
        "\u3000こんにちは",
        "東京",
        "ｶﾀｶﾅ",
        "\uff21\uff22\uff23",
        "。",
        "👍",
        "a",
        "\u200bx\u200b",
        "e\u0301",
    ],
)
def test_text_that_shows_something_is_content_to_both(db: Db, content: str) -> None:
    assert not _contract_refuses(
        posts_pb.CreatePostRequest(content=content), "content", "content.not_blank"
    )
    assert not _database_refuses_content(db, content)


# ----------------------------------------------------------- display names

names = st.text(
    st.one_of(
        invisible,
        st.sampled_from(JAPANESE + "がぱ\u3099\u309a\u0301e"),
        st.characters(categories=("L", "M", "N", "P", "S")),
    ),
    min_size=1,
    max_size=20,
)


@AGAINST_THE_DATABASE
@given(name=names)
@example(name="\u202eevil")
@example(name="Ada\nLovelace")
@example(name="\x1b[31mAda\x1b[0m")
@example(name="\u3164")
@example(name="山田\u3000太郎")
@example(name="か\u3099")
def test_contract_and_database_agree_on_display_names(db: Db, name: str) -> None:
    user = user_pb2.User(display_name=name)
    contract = {
        rule
        for rule in ("content.not_blank", "text.no_control_characters")
        if _contract_refuses(user, "display_name", rule)
    }
    # The gateway stores the NFC form of what the contract accepted.
    stored = unicodedata.normalize("NFC", name)
    refused = _database_refuses_name(db, stored)
    expected = {
        "content.not_blank": "ck_users_display_name_not_blank",
        "text.no_control_characters": "ck_users_display_name_plain",
    }
    assert (refused is None) == (not contract)
    if refused is not None:
        assert refused in {expected[rule] for rule in contract}


@pytest.mark.parametrize("name", ["か\u3099", "e\u0301", "\u1100\u1161"])
def test_the_database_keeps_display_names_in_nfc(db: Db, name: str) -> None:
    assert _database_refuses_name(db, name) == "ck_users_display_name_nfc"
    assert _database_refuses_name(db, unicodedata.normalize("NFC", name)) is None


def test_the_database_checks_the_contracts_own_classes(database_url: URL) -> None:
    """The migration's frozen copy of the classes is what the contract says today."""
    with psycopg.connect(libpq(database_url)) as conn:
        rows = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname IN ('ck_posts_content_not_blank', 'ck_users_display_name_not_blank', "
            "'ck_users_display_name_plain')"
        ).fetchall()
    definitions: dict[str, str] = dict(rows)
    assert f"'{text_rules.VISIBLE_CHARACTER}'" in definitions["ck_posts_content_not_blank"]
    assert f"'{text_rules.VISIBLE_CHARACTER}'" in definitions["ck_users_display_name_not_blank"]
    assert f"'{text_rules.CONTROL_CHARACTER}'" in definitions["ck_users_display_name_plain"]


# ------------------------------------------------- a violation that slips through

SECRET_CONTENT = "\x0b秘密の下書き\x0b"


# No empty_tables here: its TRUNCATE would wait for the `db` fixture's transaction.
async def test_a_constraint_violation_past_validation_is_a_field_violation(
    database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_async_engine(database_url)
    sessions = create_session_factory(engine)
    author = await make_user(sessions)
    # Straight past validation: a content of the blank-only check's kind.
    with pytest.raises(IntegrityError) as caught:
        async with sessions.begin() as session:
            session.add(Post(id=uuid.uuid4(), user_id=author.id, content="\x0b\u200b"))
    await engine.dispose()

    caplog.set_level(logging.DEBUG)
    for method, field in [
        ("/nuell.posts.v1.PostService/CreatePost", "content"),
        ("/nuell.posts.v1.PostService/UpdatePost", "post.content"),
        ("(backfill)", "content"),
    ]:
        error = refused_write(caught.value, method)
        assert isinstance(error, InvalidArgument)
        assert error.reason == "INVALID_FIELDS"
        (violation,) = error.violations
        assert (violation.field, violation.reason) == (field, "content.not_blank")
    (record, *_) = caplog.records
    assert record.constraint == "ck_posts_content_not_blank"  # type: ignore[attr-defined]
    assert record.sqlstate == "23514"  # type: ignore[attr-defined]
    assert "\u200b" not in caplog.text


def test_unique_and_foreign_key_violations_are_not_internal(
    db: Db,
) -> None:
    conn, author = db
    for sql, params, expected in [
        (
            "INSERT INTO users (id, email, hashed_password) VALUES (%s, %s, %s)",
            (uuid.uuid4(), f"{author.hex}@EXAMPLE.com", hash_of("Correct-Horse-42")),
            AlreadyExists,
        ),
        (
            "INSERT INTO posts (id, user_id, content) VALUES (%s, %s, %s)",
            (uuid.uuid4(), uuid.uuid4(), SECRET_CONTENT + "x"),
            FailedPrecondition,
        ),
    ]:
        with pytest.raises(psycopg.IntegrityError) as caught, conn.transaction():
            conn.execute(sql, params)
        assert isinstance(
            refused_write(caught.value, "/nuell.posts.v1.PostService/CreatePost"), expected
        )
