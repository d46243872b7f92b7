"""UserService end to end: reading, listing, updating and deactivating accounts."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nuell.auth.v1 import auth_service_pb2
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as pb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub

from nuell_gateway.authz import Role
from nuell_gateway.resources import Resources
from tests.utils.factories import TestUser, bearer, make_user
from tests.utils.rpc import error_details
from tests.utils.samples import SOME_ID, STRONG_PASSWORD
from tests.utils.snapshot import snapshot

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def alice(resources: Resources) -> TestUser:
    return await make_user(resources.sessions, email="alice@example.com")


@pytest.fixture
async def admin(resources: Resources) -> TestUser:
    return await make_user(resources.sessions, email="root@example.com", role=Role.ADMIN)


def _as(resources: Resources, user: TestUser) -> Metadata:
    return bearer(resources.access_tokens, user)


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def _update(
    users: UserServiceStub, metadata: Metadata, user: user_pb2.User, *paths: str
) -> pb.UpdateUserResponse:
    response: pb.UpdateUserResponse = await users.UpdateUser(
        pb.UpdateUserRequest(user=user, update_mask=_mask(*paths)), metadata=metadata
    )
    return response


async def _rejected(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


# ----------------------------------------------------------------- reading


async def test_get_current_user(
    users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    reply = await users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=_as(resources, alice))
    assert (reply.user.id, reply.user.email) == (str(alice.id), "alice@example.com")
    assert reply.user.create_time.seconds > 0
    assert reply.user.etag


async def test_reads_and_writes_describe_an_account_identically(
    users: UserServiceStub, resources: Resources, alice: TestUser, admin: TestUser
) -> None:
    """UpdateUser and ListUsers answer from the ORM row, GetCurrentUser and
    GetUser from the hot-path SQL: the same account, to the microsecond and
    the etag, either way; deactivated too."""
    me, root = _as(resources, alice), _as(resources, admin)
    before = (await users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=me)).user
    renamed = await _update(
        users,
        me,
        user_pb2.User(id=str(alice.id), display_name="Alice 🎉 L.", etag=before.etag),
        "display_name",
    )

    current = (await users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=me)).user
    got = (await users.GetUser(pb.GetUserRequest(id=str(alice.id)), metadata=root)).user
    listed = [
        u
        for u in (await users.ListUsers(pb.ListUsersRequest(page_size=100), metadata=root)).users
        if u.id == str(alice.id)
    ]

    assert current == renamed.user
    assert got == renamed.user
    assert listed == [renamed.user]
    assert renamed.user.update_time.nanos % 1000 == 0  # PostgreSQL keeps microseconds

    deactivated = await _update(
        users,
        root,
        user_pb2.User(id=str(alice.id), is_active=False, etag=renamed.user.etag),
        "is_active",
    )
    got = (await users.GetUser(pb.GetUserRequest(id=str(alice.id)), metadata=root)).user
    assert got == deactivated.user
    assert not got.is_active


async def test_admin_gets_anyone_and_unknown_ids_are_not_found(
    users: UserServiceStub, resources: Resources, alice: TestUser, admin: TestUser
) -> None:
    reply = await users.GetUser(pb.GetUserRequest(id=str(alice.id)), metadata=_as(resources, admin))
    assert reply.user.email == "alice@example.com"
    error = await _rejected(
        users.GetUser(pb.GetUserRequest(id=SOME_ID), metadata=_as(resources, admin))
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.error_info is not None
    assert details.error_info.reason == "USER_NOT_FOUND"


async def test_a_user_cannot_probe_other_ids(
    users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    # Existing or not, someone else's id is PERMISSION_DENIED: no enumeration.
    other = await make_user(resources.sessions)
    for target in (str(other.id), SOME_ID):
        error = await _rejected(
            users.GetUser(pb.GetUserRequest(id=target), metadata=_as(resources, alice))
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


# ----------------------------------------------------------------- listing


async def test_list_users_walks_every_account_once_in_order(
    users: UserServiceStub, resources: Resources, admin: TestUser
) -> None:
    made = [await make_user(resources.sessions) for _ in range(7)]
    seen: list[str] = []
    token, pages = "", 0
    while True:
        reply = await users.ListUsers(
            pb.ListUsersRequest(page_size=3, page_token=token), metadata=_as(resources, admin)
        )
        assert len(reply.users) <= 3
        seen.extend(u.id for u in reply.users)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [str(admin.id)] + [str(u.id) for u in made]


@pytest.mark.parametrize(("requested", "served"), [(0, 8), (1000, 8), (2, 2)])
async def test_page_size_has_a_default_and_a_cap(
    users: UserServiceStub, resources: Resources, admin: TestUser, requested: int, served: int
) -> None:
    for _ in range(7):
        await make_user(resources.sessions)
    reply = await users.ListUsers(
        pb.ListUsersRequest(page_size=requested), metadata=_as(resources, admin)
    )
    assert len(reply.users) == served


@pytest.mark.parametrize(
    "token",
    ["garbage", "eyJjIjp7fX0.AAAA", "a.b.c"],
)
async def test_malformed_page_tokens_are_invalid_argument(
    users: UserServiceStub, resources: Resources, admin: TestUser, token: str
) -> None:
    error = await _rejected(
        users.ListUsers(pb.ListUsersRequest(page_token=token), metadata=_as(resources, admin))
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.violations] == ["page_token"]


async def test_a_tampered_page_token_is_invalid_argument(
    users: UserServiceStub, resources: Resources, admin: TestUser
) -> None:
    for _ in range(3):
        await make_user(resources.sessions)
    first = await users.ListUsers(pb.ListUsersRequest(page_size=1), metadata=_as(resources, admin))
    payload, mac = first.next_page_token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    error = await _rejected(
        users.ListUsers(
            pb.ListUsersRequest(page_token=f"{flipped}.{mac}"), metadata=_as(resources, admin)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_negative_page_size_is_invalid_argument(
    users: UserServiceStub, resources: Resources, admin: TestUser
) -> None:
    error = await _rejected(
        users.ListUsers(pb.ListUsersRequest(page_size=-1), metadata=_as(resources, admin))
    )
    assert [v.field for v in error_details(error).violations] == ["page_size"]


# ---------------------------------------------------------------- updating


async def test_owner_renames_themselves_and_the_etag_moves(
    users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    before = (await users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=me)).user
    reply = await _update(
        users,
        me,
        user_pb2.User(id=str(alice.id), display_name="Alice L.", etag=before.etag),
        "display_name",
    )
    assert reply.user.display_name == "Alice L."
    assert reply.user.etag != before.etag
    assert reply.user.update_time.ToDatetime() >= before.update_time.ToDatetime()
    assert reply.user.email == before.email  # untouched: not in the mask


async def test_a_stale_etag_is_aborted_and_changes_nothing(
    users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    stale = (await users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=me)).user.etag
    await _update(users, me, user_pb2.User(id=str(alice.id), display_name="First"), "display_name")
    before = await snapshot(resources.sessions)
    error = await _rejected(
        _update(
            users,
            me,
            user_pb2.User(id=str(alice.id), display_name="Second", etag=stale),
            "display_name",
        )
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.ABORTED
    assert details.error_info is not None
    assert details.error_info.reason == "ETAG_MISMATCH"
    assert await snapshot(resources.sessions) == before


@pytest.mark.parametrize(
    ("paths", "reasons"),
    [
        (("email",), {"mask.immutable"}),
        (("id", "create_time"), {"mask.immutable"}),
        (("nickname",), {"mask.unknown"}),
        (("*",), {"mask.unknown"}),
        ((), {"mask.empty"}),
    ],
)
async def test_bad_masks_are_invalid_argument_and_change_nothing(
    users: UserServiceStub,
    resources: Resources,
    alice: TestUser,
    paths: tuple[str, ...],
    reasons: set[str],
) -> None:
    before = await snapshot(resources.sessions)
    error = await _rejected(
        _update(
            users,
            _as(resources, alice),
            user_pb2.User(id=str(alice.id), email="x@example.com"),
            *paths,
        )
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.reason for v in details.violations} == reasons
    assert all(v.field.startswith("update_mask.paths") for v in details.violations)
    assert await snapshot(resources.sessions) == before


async def test_a_too_long_display_name_is_invalid_argument(
    users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    error = await _rejected(
        _update(
            users,
            _as(resources, alice),
            user_pb2.User(id=str(alice.id), display_name="x" * 65),
            "display_name",
        )
    )
    assert [(v.field, v.reason) for v in error_details(error).violations] == [
        ("user.display_name", "string.max_len")
    ]


async def test_an_owner_cannot_promote_themselves(
    users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    before = await snapshot(resources.sessions)
    error = await _rejected(
        _update(
            users,
            _as(resources, alice),
            user_pb2.User(id=str(alice.id), role=user_pb2.ROLE_ADMIN),
            "role",
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await snapshot(resources.sessions) == before


async def test_admin_promotion_and_demotion_take_effect_on_existing_tokens(
    users: UserServiceStub, resources: Resources, alice: TestUser, admin: TestUser
) -> None:
    # A token issued while alice was an admin carries admin scopes...
    alice_admin = TestUser(alice.id, alice.email, alice.password, Role.ADMIN, alice.session_id)
    old_admin_token = _as(resources, alice_admin)
    error = await _rejected(users.ListUsers(pb.ListUsersRequest(), metadata=old_admin_token))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # ...but her role is user
    await _update(
        users,
        _as(resources, admin),
        user_pb2.User(id=str(alice.id), role=user_pb2.ROLE_ADMIN),
        "role",
    )
    assert (await users.ListUsers(pb.ListUsersRequest(), metadata=old_admin_token)).users
    await _update(
        users,
        _as(resources, admin),
        user_pb2.User(id=str(alice.id), role=user_pb2.ROLE_USER),
        "role",
    )
    error = await _rejected(users.ListUsers(pb.ListUsersRequest(), metadata=old_admin_token))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_role_must_be_defined(
    users: UserServiceStub, resources: Resources, alice: TestUser, admin: TestUser
) -> None:
    error = await _rejected(
        _update(
            users,
            _as(resources, admin),
            user_pb2.User(id=str(alice.id), role=user_pb2.ROLE_UNSPECIFIED),
            "role",
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------- deactivation


async def test_deactivation_locks_the_account_out_everywhere(
    users: UserServiceStub,
    auth: AuthServiceStub,
    resources: Resources,
    alice: TestUser,
    admin: TestUser,
) -> None:
    login = await auth.Login(
        auth_service_pb2.LoginRequest(email=alice.email, password=STRONG_PASSWORD)
    )
    session = (("authorization", f"Bearer {login.access_token}"),)
    await users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=session)

    reply = await users.DeactivateUser(
        pb.DeactivateUserRequest(id=str(alice.id)), metadata=_as(resources, admin)
    )
    assert not reply.user.is_active
    again = await users.DeactivateUser(
        pb.DeactivateUserRequest(id=str(alice.id)), metadata=_as(resources, admin)
    )
    assert again.user.etag == reply.user.etag  # idempotent: nothing changed

    for call in (
        users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=session),
        auth.Refresh(auth_service_pb2.RefreshRequest(refresh_token=login.refresh_token)),
        auth.Login(auth_service_pb2.LoginRequest(email=alice.email, password=STRONG_PASSWORD)),
    ):
        assert (await _rejected(call)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_deactivating_an_unknown_account_is_not_found(
    users: UserServiceStub, resources: Resources, admin: TestUser
) -> None:
    error = await _rejected(
        users.DeactivateUser(pb.DeactivateUserRequest(id=SOME_ID), metadata=_as(resources, admin))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_reactivation_lets_the_account_back_in(
    users: UserServiceStub,
    auth: AuthServiceStub,
    resources: Resources,
    alice: TestUser,
    admin: TestUser,
) -> None:
    await users.DeactivateUser(
        pb.DeactivateUserRequest(id=str(alice.id)), metadata=_as(resources, admin)
    )
    await _update(
        users, _as(resources, admin), user_pb2.User(id=str(alice.id), is_active=True), "is_active"
    )
    login = await auth.Login(
        auth_service_pb2.LoginRequest(email=alice.email, password=STRONG_PASSWORD)
    )
    assert login.access_token


@pytest.mark.parametrize(
    ("paths", "user_fields"),
    [
        (("is_active",), {"is_active": False}),
        (("role",), {"role": user_pb2.ROLE_USER}),
    ],
)
async def test_the_last_active_admin_cannot_be_removed(
    users: UserServiceStub,
    resources: Resources,
    admin: TestUser,
    paths: tuple[str, ...],
    user_fields: dict[str, object],
) -> None:
    me = _as(resources, admin)
    before = await snapshot(resources.sessions)
    for call in (
        _update(users, me, user_pb2.User(id=str(admin.id), **user_fields), *paths),  # type: ignore[arg-type]
        users.DeactivateUser(pb.DeactivateUserRequest(id=str(admin.id)), metadata=me),
    ):
        details = error_details(await _rejected(call))
        assert details.code == grpc.StatusCode.FAILED_PRECONDITION
        assert details.error_info is not None
        assert details.error_info.reason == "LAST_ADMIN"
    assert await snapshot(resources.sessions) == before


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    users: UserServiceStub, resources: Resources, admin: TestUser
) -> None:
    second = await make_user(resources.sessions, role=Role.ADMIN)
    results = await asyncio.gather(
        _update(
            users,
            _as(resources, admin),
            user_pb2.User(id=str(second.id), role=user_pb2.ROLE_USER),
            "role",
        ),
        _update(
            users,
            _as(resources, second),
            user_pb2.User(id=str(admin.id), role=user_pb2.ROLE_USER),
            "role",
        ),
        return_exceptions=True,
    )
    outcomes = sorted(
        r.code().name if isinstance(r, grpc.aio.AioRpcError) else "ok" for r in results
    )
    # The loser is refused as the last admin, or (demoted first) for lack of scope.
    assert outcomes in (["FAILED_PRECONDITION", "ok"], ["PERMISSION_DENIED", "ok"])
    rows = (await snapshot(resources.sessions))["users"]
    role, is_active = 4, 5  # column positions in `users`
    assert sum(1 for row in rows if row[role] == "admin" and row[is_active]) == 1
