"""Page sizes and page tokens (pagination.py): a token resumes only the listing
that issued it, survives a key rotation, and anything else is INVALID_ARGUMENT
on `page_token`, never a crash."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuell_gateway.errors import InvalidArgument
from nuell_gateway.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageTokens, page_size

OLD_KEY, NEW_KEY = b"o" * 32, b"n" * 32
SCOPE = "posts.list:*:0"


@dataclass(frozen=True)
class Row:
    created_at: datetime
    id: uuid.UUID


ROWS = [
    Row(datetime(2026, 4, 1, 9, tzinfo=UTC) + timedelta(seconds=n), uuid.uuid4()) for n in range(5)
]


def _assert_refused(caught: pytest.ExceptionInfo[InvalidArgument]) -> None:
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("page_token", "INVALID_PAGE_TOKEN")
    ]


@pytest.mark.parametrize(
    ("requested", "default", "expected"),
    [
        (0, DEFAULT_PAGE_SIZE, DEFAULT_PAGE_SIZE),
        (0, 20, 20),
        (7, 20, 7),
        (10_000, 20, MAX_PAGE_SIZE),
    ],
)
def test_page_size_default_and_cap(requested: int, default: int, expected: int) -> None:
    assert page_size(requested, default=default) == expected


def test_a_token_resumes_after_the_last_row_served() -> None:
    tokens = PageTokens([NEW_KEY])
    page, token = tokens.next_page(ROWS[:3], 2, scope=SCOPE)
    assert page == ROWS[:2]
    assert tokens.position(token, scope=SCOPE) == (ROWS[1].created_at, ROWS[1].id)


def test_the_last_page_has_no_token_and_no_token_starts_at_the_beginning() -> None:
    tokens = PageTokens([NEW_KEY])
    assert tokens.next_page(ROWS[:2], 2, scope=SCOPE) == (ROWS[:2], "")
    assert tokens.position("", scope=SCOPE) is None


def test_a_token_survives_a_key_rotation_until_its_key_is_dropped() -> None:
    _, token = PageTokens([OLD_KEY]).next_page(ROWS, 1, scope=SCOPE)
    assert PageTokens([NEW_KEY, OLD_KEY]).position(token, scope=SCOPE) is not None
    with pytest.raises(InvalidArgument) as caught:
        PageTokens([NEW_KEY]).position(token, scope=SCOPE)
    _assert_refused(caught)


def test_a_token_of_another_listing_is_refused() -> None:
    tokens = PageTokens([NEW_KEY])
    _, token = tokens.next_page(ROWS, 1, scope=SCOPE)
    with pytest.raises(InvalidArgument) as caught:
        tokens.position(token, scope="posts.list:*:1")  # the moderators' view
    _assert_refused(caught)


def test_an_edited_token_is_refused() -> None:
    tokens = PageTokens([NEW_KEY])
    _, token = tokens.next_page(ROWS, 1, scope=SCOPE)
    payload, mac = token.split(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    with pytest.raises(InvalidArgument) as caught:
        tokens.position(f"{forged}.{mac}", scope=SCOPE)
    _assert_refused(caught)


def test_a_signed_cursor_without_a_position_is_refused() -> None:
    tokens = PageTokens([NEW_KEY])
    with pytest.raises(InvalidArgument) as caught:
        tokens.position(tokens.encode({"t": "昨日", "id": "最初"}, scope=SCOPE), scope=SCOPE)
    _assert_refused(caught)


@given(
    st.text(alphabet=st.sampled_from("次のページ.=-_aZ09\x00\u200b"), min_size=1)
    | st.text(min_size=1)
)
def test_any_other_text_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        PageTokens([NEW_KEY]).position(token, scope=SCOPE)
    _assert_refused(caught)
