"""Access tokens under attack: every forged or stale token is UNAUTHENTICATED.

Each case crafts a token the way an attacker would and presents it to a
real RPC through the real gateway.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import grpc
import jwt
import pytest
from nuell.users.v1 import user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub

from nuell_gateway.authz import Role
from nuell_gateway.config import Settings
from nuell_gateway.resources import Resources
from tests.utils.factories import TestUser, bearer, make_user
from tests.utils.rpc import error_details

KEY = b"s" * 40  # the signing key of TEST_JWT_KEYS (kid k2026)
OLD_KEY = b"o" * 40  # the previous key (kid k2025), still accepted


def _claims(
    user_id: uuid.UUID, session_id: uuid.UUID | None = None, **overrides: object
) -> dict[str, object]:
    """Claims as the gateway issues them; for a session that exists, pass its id."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(user_id),
        "sid": str(session_id or uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "iss": "nuell",
        "aud": "nuell-api",
        "scope": "profile posts compute",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(
    claims: dict[str, object], key: bytes = KEY, kid: str = "k2026", alg: str = "HS256"
) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unsigned(user_id: uuid.UUID, session_id: uuid.UUID) -> str:
    header = _b64({"alg": "none", "typ": "JWT", "kid": "k2026"})
    return f"{header}.{_b64(_claims(user_id, session_id))}."


def _tampered(user_id: uuid.UUID, session_id: uuid.UUID) -> str:
    header, _, signature = _sign(_claims(user_id, session_id)).split(".")
    forged = _b64(_claims(user_id, session_id, scope="profile posts compute users:admin"))
    return f"{header}.{forged}.{signature}"


ATTACKS: dict[str, Callable[[uuid.UUID, uuid.UUID], str]] = {
    "alg none": _unsigned,
    "tampered payload": _tampered,
    "wrong key": lambda u, s: _sign(_claims(u, s), key=b"w" * 40),
    "unknown kid": lambda u, s: _sign(_claims(u, s), kid="k1999"),
    "algorithm switch to HS512": lambda u, s: _sign(_claims(u, s), alg="HS512"),
    "expired": lambda u, s: _sign(
        _claims(u, s, iat=int(time.time()) - 4000, exp=int(time.time()) - 60)
    ),
    "not yet valid": lambda u, s: _sign(_claims(u, s, nbf=int(time.time()) + 600)),
    "wrong issuer": lambda u, s: _sign(_claims(u, s, iss="someone-else")),
    "wrong audience": lambda u, s: _sign(_claims(u, s, aud="another-api")),
    "audience list": lambda u, s: _sign(_claims(u, s, aud=["nuell-api", "another-api"])),
    "missing jti": lambda u, s: _sign(_claims(u, s, jti=None)),
    "missing exp": lambda u, s: _sign(_claims(u, s, exp=None)),
    # Tokens from before sessions: refused, so every token is one a session can end.
    "missing sid": lambda u, s: _sign(_claims(u, s, sid=None)),
    "subject not a uuid": lambda u, s: _sign(_claims(u, s, sub="admin")),
    "malformed": lambda u, s: "not.a.jwt",
    "garbage": lambda u, s: "%%%%",
}


async def _get_me(users: UserServiceStub, metadata: tuple[tuple[str, str], ...]) -> object:
    return await users.GetCurrentUser(user_service_pb2.GetCurrentUserRequest(), metadata=metadata)


async def test_a_well_formed_token_is_accepted(users: UserServiceStub, alice: TestUser) -> None:
    reply = await _get_me(
        users, (("authorization", f"Bearer {_sign(_claims(alice.id, alice.session_id))}"),)
    )
    assert reply.user.id == str(alice.id)  # type: ignore[attr-defined]


async def test_a_token_signed_with_the_previous_key_is_still_accepted(
    users: UserServiceStub, alice: TestUser
) -> None:
    token = _sign(_claims(alice.id, alice.session_id), key=OLD_KEY, kid="k2025")
    reply = await _get_me(users, (("authorization", f"Bearer {token}"),))
    assert reply.user.id == str(alice.id)  # type: ignore[attr-defined]


# pyjwt warns that our 40-byte key is short for HS512; that is the attack.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_forged_and_stale_tokens_are_unauthenticated(
    users: UserServiceStub, alice: TestUser, attack: str
) -> None:
    # Every claim right (alice's live session included) but what the attack changes.
    token = ATTACKS[attack](alice.id, alice.session_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _get_me(users, (("authorization", f"Bearer {token}"),))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.error_info is not None
    assert details.error_info.reason == "INVALID_TOKEN"
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    "header",
    [(), (("authorization", "Basic YWRhOnB3"),), (("authorization", "Bearer "),)],
    ids=["missing", "wrong scheme", "empty"],
)
async def test_missing_or_misshapen_credentials_are_unauthenticated(
    users: UserServiceStub, header: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _get_me(users, header)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_deactivated_accounts_token_stops_working_at_once(
    users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    metadata = (("authorization", f"Bearer {_sign(_claims(alice.id, alice.session_id))}"),)
    await _get_me(users, metadata)  # the account's state is now cached
    admin = await make_user(resources.sessions, role=Role.ADMIN)
    await users.DeactivateUser(
        user_service_pb2.DeactivateUserRequest(id=str(alice.id)),
        metadata=bearer(resources.access_tokens, admin),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _get_me(users, metadata)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.error_info is not None
    assert details.error_info.reason == "ACCOUNT_INACTIVE"


async def test_a_token_for_an_unknown_account_is_refused(users: UserServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _get_me(users, (("authorization", f"Bearer {_sign(_claims(uuid.uuid4()))}"),))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_scopes_beyond_the_role_grant_nothing(
    resources: Resources, users: UserServiceStub, alice: TestUser
) -> None:
    # Even correctly signed, a user's token claiming admin scopes is narrowed
    # to what the account's role allows.
    token = _sign(_claims(alice.id, alice.session_id, scope="profile users:admin"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.ListUsers(
            user_service_pb2.ListUsersRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    from nuell_gateway.security.tokens import AccessTokens, InvalidTokenError
    from tests.conftest import TEST_JWT_KEYS

    settings = Settings.model_validate(
        {"DATABASE_URL": "postgresql://u@h/db", "jwt_keys": TEST_JWT_KEYS}
    )
    access = AccessTokens(settings)
    user_id = uuid.uuid4()
    token = access.issue(user_id=user_id, session_id=uuid.uuid4(), scopes="profile").token
    assert access.verify(token).user_id == user_id  # decoded once, remembered
    later = time.time() + settings.access_token_ttl_seconds + 60
    monkeypatch.setattr("nuell_gateway.security.tokens.time.time", lambda: later)
    with pytest.raises(InvalidTokenError):
        access.verify(token)
