# ruff: noqa: RUF001 - Japanese names have full-width look-alikes on purpose
"""The contract's text rules over a real gateway: blank posts and names that lie on screen.

A post of only vertical tabs used to pass validation and fail the database
CHECK (INTERNAL); a display name could carry bidi overrides, newlines and
ANSI escapes. Both are now INVALID_ARGUMENT with the rule named, and
change nothing; Japanese text is accepted, and names are stored in NFC.
"""

from __future__ import annotations

import unicodedata

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as posts_pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as users_pb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy import select

from nuell_gateway.db.models import User
from nuell_gateway.resources import Resources
from tests.utils.factories import TestUser, bearer
from tests.utils.rpc import error_details
from tests.utils.snapshot import snapshot

BLANK_CONTENTS = [
    "\x0b",
    "\x0b\x0b\x0b",
    "\u0085",
    "\u00a0\u180e",
    "\u200b",
    "\u200b\u200c\u200d",
    "\u2028\u2029",
    "\ufeff",
    "\u3000\u3164\u2060",
    "\U000e0041\U000e0042",
]


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def _assert_violation(error: grpc.aio.AioRpcError, field: str, rule: str) -> None:
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.error_info is not None
    assert details.error_info.reason == "INVALID_FIELDS"
    assert (field, rule) in {(v.field, v.reason) for v in details.violations}, details.violations
    assert all(v.description for v in details.violations)


@pytest.mark.parametrize("content", BLANK_CONTENTS)
async def test_blank_content_is_refused_on_create_and_update(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser, content: str
) -> None:
    posts, me = PostServiceStub(channel), bearer(resources.access_tokens, alice)
    created = (
        await posts.CreatePost(posts_pb.CreatePostRequest(content="元の文"), metadata=me)
    ).post
    before = await snapshot(resources.sessions)

    error = await _refused(
        posts.CreatePost(posts_pb.CreatePostRequest(content=content), metadata=me)
    )
    _assert_violation(error, "content", "content.not_blank")
    error = await _refused(
        posts.UpdatePost(
            posts_pb.UpdatePostRequest(
                post=post_pb2.Post(id=created.id, content=content),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
            metadata=me,
        )
    )
    _assert_violation(error, "post.content", "content.not_blank")
    assert await snapshot(resources.sessions) == before


@pytest.mark.parametrize("content", ["\u3000こんにちは", "\u200bカタカナ\u200b", "\x0b東京\x0b"])
async def test_content_that_shows_something_is_stored_exactly(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser, content: str
) -> None:
    posts = PostServiceStub(channel)
    reply = await posts.CreatePost(
        posts_pb.CreatePostRequest(content=content),
        metadata=bearer(resources.access_tokens, alice),
    )
    assert reply.post.content == content


# ------------------------------------------------------------- display names


async def _rename(
    channel: grpc.aio.Channel, resources: Resources, user: TestUser, name: str
) -> user_pb2.User:
    reply: users_pb.UpdateUserResponse = await UserServiceStub(channel).UpdateUser(
        users_pb.UpdateUserRequest(
            user=user_pb2.User(id=str(user.id), display_name=name),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=bearer(resources.access_tokens, user),
    )
    return reply.user


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("admin\u202e", "text.no_control_characters"),  # right-to-left override
        ("\u202enimda", "text.no_control_characters"),
        ("Ada\u2066Lovelace\u2069", "text.no_control_characters"),  # isolates
        ("Ada\u202aLovelace\u202c", "text.no_control_characters"),  # embedding
        ("Ada\u200fLovelace", "text.no_control_characters"),  # right-to-left mark
        ("Ada\nLovelace", "text.no_control_characters"),
        ("Ada\r\n", "text.no_control_characters"),
        ("Ada\u2028Lovelace", "text.no_control_characters"),
        ("\x1b[31mAda\x1b[0m", "text.no_control_characters"),  # ANSI colour
        ("\x1b]0;pwned\x07", "text.no_control_characters"),  # terminal title
        ("Ada\x9b31m", "text.no_control_characters"),  # C1 CSI
        ("Ada\tLovelace", "text.no_control_characters"),
        ("ad\u200bmin", "text.no_control_characters"),  # zero-width space
        ("Ada\u00adLovelace", "text.no_control_characters"),  # soft hyphen
        ("\u3000", "content.not_blank"),
        ("\u3164", "content.not_blank"),  # Hangul filler
        ("   ", "content.not_blank"),
    ],
)
async def test_a_name_that_lies_on_screen_is_refused(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser, name: str, rule: str
) -> None:
    await _rename(channel, resources, alice, "アリス")
    before = await snapshot(resources.sessions)
    error = await _refused(_rename(channel, resources, alice, name))
    _assert_violation(error, "user.display_name", rule)
    assert await snapshot(resources.sessions) == before


@pytest.mark.parametrize(
    "name",
    [
        "山田　太郎",  # ideographic space between family and given name
        "やまだ たろう",
        "ヤマダ・タロウ",
        "ﾔﾏﾀﾞ ﾀﾛｳ",  # half-width kana stay as they are (NFC, not NFKC)
        "ＡＬＩＣＥ",
        "髙橋 𠮷野",  # kanji outside the BMP
        "👨\u200d👩\u200d👧 family",  # ZWJ sequences stay allowed
        "می\u200cخواهم",  # ZWNJ, as Persian names need
        "",  # unset
    ],
)
async def test_real_names_are_accepted_as_written(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser, name: str
) -> None:
    user = await _rename(channel, resources, alice, name)
    assert user.display_name == name


@pytest.mark.parametrize(
    "composed",
    ["がっこう", "パン", "ポケモン", "Zoë", "Ångström", "김민준"],
)
async def test_a_decomposed_name_is_stored_composed(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser, composed: str
) -> None:
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    user = await _rename(channel, resources, alice, decomposed)
    assert user.display_name == composed
    async with resources.sessions() as session:
        stored = await session.scalar(select(User.display_name).where(User.id == alice.id))
    assert stored == composed


async def test_a_name_that_grows_past_the_limit_in_nfc_is_refused(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser
) -> None:
    # U+FB2C is excluded from composition: in NFC each becomes 3 code points.
    name = "\ufb2c" * 32
    assert len(name) == 32 < len(unicodedata.normalize("NFC", name))
    before = await snapshot(resources.sessions)
    error = await _refused(_rename(channel, resources, alice, name))
    _assert_violation(error, "user.display_name", "string.max_len")
    assert await snapshot(resources.sessions) == before
