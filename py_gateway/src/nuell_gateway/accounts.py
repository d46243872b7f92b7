"""Account rules: reading, listing and changing accounts (registration: `account_lifecycle`).

Keyword-only functions over the process's `Resources`; the UserService and
AuthService servicers decode a request, call one of them and encode what it
returns. The rules kept here:

- Owners change their own `display_name`; only `users:admin` changes
  anyone's, and `role` and `is_active` at all. A non-admin learns nothing
  about other ids, because ownership is checked before any lookup.
- The last active admin can never be demoted or deactivated.
- Deactivating an account revokes every refresh token it holds; its access
  tokens stop at the next call, since the boundary reads the account's
  current state (`account_states`), which the change evicts before answering.
- A change made at a stale version is ABORTED and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway import audit, sessions, text_rules
from nuell_gateway.audit import Event
from nuell_gateway.authz import Caller, Role, Scope
from nuell_gateway.db import hot_reads, users
from nuell_gateway.db.hot_reads import UserRow
from nuell_gateway.db.models import User
from nuell_gateway.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from nuell_gateway.pagination import page_size
from nuell_gateway.resources import Resources

# What an update may change: owners their display name, admins also these.
SELF_PATHS = frozenset({"display_name"})
ADMIN_PATHS = frozenset({"role", "is_active"})
LIST_SCOPE = "users.list"


def _not_found(user_id: uuid.UUID | str) -> NotFound:
    return NotFound(
        "no account has this id", reason="USER_NOT_FOUND", metadata={"id": str(user_id)}
    )


def _stale() -> Aborted:
    return Aborted(
        "the account changed since you read it; read it again and retry",
        reason="ETAG_MISMATCH",
    )


async def get_account(resources: Resources, *, viewer: Caller, user_id: uuid.UUID) -> UserRow:
    """The account, if `viewer` may see it (their own, or anyone's with `users:admin`)."""
    # Before the lookup, so a non-admin learns nothing about other ids.
    viewer.require_self_or(user_id, Scope.USERS_ADMIN)
    user = await hot_reads.get_user(resources.hot_reads, user_id=user_id)
    if user is None:
        raise _not_found(user_id)
    return user


async def list_accounts(
    resources: Resources, *, requested_page_size: int, page_token: str
) -> tuple[Sequence[User], str]:
    """One page of every account, oldest first, and the token of the next page."""
    limit = page_size(requested_page_size)
    tokens = resources.page_tokens
    after = tokens.position(page_token, scope=LIST_SCOPE)
    async with resources.sessions() as session:
        # One extra row tells whether another page exists.
        rows = await users.list_users(session, after=after, limit=limit + 1)
    return tokens.next_page(rows, limit, scope=LIST_SCOPE)


async def update_account(
    resources: Resources,
    *,
    editor: Caller,
    user_id: uuid.UUID,
    paths: Collection[str],
    display_name: str,
    role: Role | None,
    is_active: bool,
    expected_version: int | None,
) -> User:
    """Change the fields named in `paths` to the values given; `role` None is no defined role.

    `expected_version` None changes whatever version is current.
    """
    editor.require_self_or(user_id, Scope.USERS_ADMIN)
    if ADMIN_PATHS.intersection(paths):
        editor.require(Scope.USERS_ADMIN)
    values: dict[str, Any] = {}
    if "display_name" in paths:
        values["display_name"] = text_rules.display_name(display_name)
    if "role" in paths:
        if role is None:
            raise InvalidArgument(
                "role must be ROLE_USER or ROLE_ADMIN",
                reason="INVALID_ROLE",
                violations=[FieldViolation("user.role", "must be a defined role", "enum.role")],
            )
        values["role"] = str(role)
    if "is_active" in paths:
        values["is_active"] = is_active

    async with resources.sessions.begin() as session:
        admins = (
            await users.lock_active_admin_ids(session) if ADMIN_PATHS.intersection(paths) else set()
        )
        current = await _locked(session, user_id, expected_version)
        _ensure_an_admin_remains(current, values, admins)
        was = Standing(role=current.role, is_active=current.is_active)
        updated = await users.update_user(
            session, user_id=user_id, expected_version=current.version, values=values
        )
        if updated is None:
            raise _stale()
        await _record_changes(resources, session, editor=editor, before=was, after=updated)
    resources.accounts.evict(user_id)
    return updated


@dataclass(frozen=True, slots=True)
class Standing:
    """What an account was before a change (the ORM row is updated in place)."""

    role: str
    is_active: bool


async def _record_changes(
    resources: Resources, session: AsyncSession, *, editor: Caller, before: Standing, after: User
) -> None:
    """Audit role and activity changes; a deactivation ends every session for good."""
    if before.role != after.role:
        await audit.record(
            session,
            Event.ROLE_CHANGED,
            user_id=after.id,
            actor_id=editor.user_id,
            reason=f"{before.role}->{after.role}",
        )
    if before.is_active != after.is_active:
        event = Event.REACTIVATED if after.is_active else Event.DEACTIVATED
        await audit.record(session, event, user_id=after.id, actor_id=editor.user_id)
    if before.is_active and not after.is_active:
        await sessions.end(
            resources, session, user_id=after.id, reason="deactivated", actor_id=editor.user_id
        )


async def deactivate_account(resources: Resources, *, editor: Caller, user_id: uuid.UUID) -> User:
    """The account, inactive and with every session ended; a no-op if it already is."""
    async with resources.sessions.begin() as session:
        admins = await users.lock_active_admin_ids(session)
        current = await _locked(session, user_id, expected_version=None)
        if not current.is_active:
            return current
        values = {"is_active": False}
        _ensure_an_admin_remains(current, values, admins)
        was = Standing(role=current.role, is_active=current.is_active)
        updated = await users.update_user(
            session, user_id=user_id, expected_version=None, values=values
        )
        assert updated is not None  # the row is locked by _locked
        await _record_changes(resources, session, editor=editor, before=was, after=updated)
    resources.accounts.evict(user_id)
    return updated


async def _locked(session: AsyncSession, user_id: uuid.UUID, expected_version: int | None) -> User:
    """The row to change, locked; NOT_FOUND or ABORTED (another version) otherwise."""
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise _not_found(user_id)
    if expected_version is not None and expected_version != user.version:
        raise _stale()
    return user


def _ensure_an_admin_remains(current: User, values: dict[str, Any], admins: set[uuid.UUID]) -> None:
    """FAILED_PRECONDITION if the change would leave no active admin.

    `admins` are the active admins, locked first (in id order) by the
    transaction, so that two admins demoting each other serialise instead of
    both succeeding, and never deadlock.
    """
    role = values.get("role", current.role)
    active = values.get("is_active", current.is_active)
    if current.id not in admins or (role == "admin" and active) or admins - {current.id}:
        return
    raise FailedPrecondition(
        "this is the last active admin; make another admin first", reason="LAST_ADMIN"
    )
