"""Sessions: started by a sign-in, ended by Logout, a revocation or an account change.

A session is one sign-in's refresh-token family (`auth_sessions`); its
access tokens carry its id as `sid`, and the boundary refuses them once the
session has ended (account_states.py, on every process at once). Ending
sessions happens here only, each with an audit event. The SessionService
functions below are keyword-only over the process's `Resources`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypedDict, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway import audit, clients
from nuell_gateway.audit import Event
from nuell_gateway.authz import Caller, Role, Scope, scope_string
from nuell_gateway.db import audit as audit_rows
from nuell_gateway.db import auth_sessions, refresh_tokens
from nuell_gateway.db.models import AuthEvent, AuthSession, User
from nuell_gateway.errors import NotFound
from nuell_gateway.pagination import page_size
from nuell_gateway.resources import Resources
from nuell_gateway.security.tokens import new_opaque_token

TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth2 token type, not a secret


class IssuedTokens(TypedDict):
    """What a sign-in or a refresh hands out (the fields the replies share)."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    scope: str


def tokens_for(
    resources: Resources,
    *,
    user: User,
    session_id: uuid.UUID,
    refresh_token: str,
    issued_at: int | None = None,
    token_id: str | None = None,
) -> IssuedTokens:
    scopes = scope_string(Role(user.role))
    access = resources.access_tokens.issue(
        user_id=user.id,
        session_id=session_id,
        scopes=scopes,
        generation=user.token_generation,
        issued_at=issued_at,
        token_id=token_id,
    )
    return IssuedTokens(
        access_token=access.token,
        token_type=TOKEN_TYPE,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
        scope=scopes,
    )


async def start(resources: Resources, db: AsyncSession, *, user: User, reason: str) -> IssuedTokens:
    """A new session for `user`, signed in (with `reason`: `password`, `totp`, …)."""
    session_id = uuid7()
    ttl = timedelta(seconds=resources.settings.refresh_token_ttl_seconds)
    first = new_opaque_token()
    await auth_sessions.start_session(
        db,
        session_id=session_id,
        user_id=user.id,
        expires_at=datetime.now(UTC) + ttl,
        client=clients.current(),
    )
    await refresh_tokens.store_refresh_token(
        db, user_id=user.id, family_id=session_id, digest=first.digest, ttl=ttl
    )
    await audit.record(
        db, Event.SIGN_IN_SUCCEEDED, user_id=user.id, session_id=session_id, reason=reason
    )
    return tokens_for(resources, user=user, session_id=session_id, refresh_token=first.value)


async def end(
    resources: Resources,
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    reason: str,
    actor_id: uuid.UUID | None,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """End the account's live sessions (just `only`, or all but `keep`) in `db`'s
    transaction; their access tokens stop on every process once it commits."""
    ended = await auth_sessions.end_sessions(
        db, user_id=user_id, reason=reason, only=only, keep=keep
    )
    for session_id in ended:
        await audit.record(
            db,
            Event.SESSION_REVOKED,
            user_id=user_id,
            actor_id=actor_id,
            session_id=session_id,
            reason=reason,
        )
        # This process at once; the others when the commit's NOTIFY arrives.
        resources.accounts.evict(session_id)
    return ended


R = TypeVar("R", AuthSession, AuthEvent)

SESSIONS_SCOPE = "sessions.list"
EVENTS_SCOPE = "audit_events.list"


async def list_sessions(
    resources: Resources,
    *,
    viewer: Caller,
    user_id: str,
    requested_page_size: int,
    page_token: str,
) -> tuple[Sequence[AuthSession], str]:
    return await _page(
        resources,
        viewer,
        user_id,
        requested_page_size,
        page_token,
        SESSIONS_SCOPE,
        auth_sessions.list_live_sessions,
    )


async def list_events(
    resources: Resources,
    *,
    viewer: Caller,
    user_id: str,
    requested_page_size: int,
    page_token: str,
) -> tuple[Sequence[AuthEvent], str]:
    return await _page(
        resources,
        viewer,
        user_id,
        requested_page_size,
        page_token,
        EVENTS_SCOPE,
        audit_rows.list_events,
    )


async def _page(
    resources: Resources,
    viewer: Caller,
    user_id: str,
    requested_page_size: int,
    page_token: str,
    scope_name: str,
    fetch: Callable[..., Awaitable[list[R]]],
) -> tuple[Sequence[R], str]:
    """One page of the account's rows, newest first: the viewer's own, or
    anyone's with `sessions:admin`. Page tokens are bound to the account."""
    owner = uuid.UUID(user_id) if user_id else viewer.user_id
    # Before any lookup, so a non-admin learns nothing about other ids.
    viewer.require_self_or(owner, Scope.SESSIONS_ADMIN)
    limit = page_size(requested_page_size)
    scope = f"{scope_name}:{owner}"
    after = resources.page_tokens.position(page_token, scope=scope)
    async with resources.sessions() as db:
        rows = await fetch(db, user_id=owner, after=after, limit=limit + 1)
    return resources.page_tokens.next_page(rows, limit, scope=scope)


async def revoke_session(resources: Resources, *, viewer: Caller, session_id: uuid.UUID) -> None:
    """End one session: the viewer's own, or anyone's with `sessions:admin`."""
    async with resources.sessions.begin() as db:
        found = await auth_sessions.get_session(db, session_id=session_id)
        if found is None or (
            found.user_id != viewer.user_id and not viewer.has(Scope.SESSIONS_ADMIN)
        ):
            # The same answer for another account's session: ids reveal nothing.
            raise NotFound(
                "no session of yours has this id",
                reason="SESSION_NOT_FOUND",
                metadata={"id": str(session_id)},
            )
        reason = "revoked_by_user" if found.user_id == viewer.user_id else "revoked_by_admin"
        await end(
            resources,
            db,
            user_id=found.user_id,
            reason=reason,
            actor_id=viewer.user_id,
            only=found.id,
        )


async def revoke_other_sessions(resources: Resources, *, viewer: Caller) -> None:
    async with resources.sessions.begin() as db:
        await end(
            resources,
            db,
            user_id=viewer.user_id,
            reason="revoked_by_user",
            actor_id=viewer.user_id,
            keep=viewer.session_id,
        )
