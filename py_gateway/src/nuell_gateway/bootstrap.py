"""Creating the first admin: `nuell-gateway create-admin`, or env on first start.

The email and password obey the same rules as Register (the proto's
protovalidate rules), so a bootstrap admin is never weaker than a user.
"""

from __future__ import annotations

import logging

from nuell.auth.v1 import auth_service_pb2

from nuell_gateway.db import users
from nuell_gateway.errors import AlreadyExists, InvalidArgument
from nuell_gateway.resources import Resources
from nuell_gateway.validation import validate_request

logger = logging.getLogger(__name__)


class BootstrapError(RuntimeError):
    """The admin cannot be created; the message says why (never the password)."""


async def create_admin(resources: Resources, *, email: str, password: str) -> str:
    """Create an admin account with a new email; returns its id."""
    try:
        validate_request(auth_service_pb2.RegisterRequest(email=email, password=password))
    except InvalidArgument as exc:
        rules = "; ".join(f"{v.field}: {v.description}" for v in exc.violations)
        raise BootstrapError(f"the admin's credentials break the rules: {rules}") from None
    hashed = await resources.passwords.hash(password)
    try:
        async with resources.sessions.begin() as session:
            # Verified at creation: the operator typed the address in.
            user = await users.create_user(
                session,
                email=users.normalize_email(email),
                hashed_password=hashed,
                role="admin",
                locale=resources.settings.default_locale,
                email_verified=True,
            )
    except AlreadyExists:
        raise BootstrapError(
            f"an account with the email {email} exists already; promote it with UpdateUser"
        ) from None
    logger.info("created admin", extra={"user_id": str(user.id)})
    return str(user.id)


async def bootstrap_admin_from_settings(resources: Resources) -> None:
    """On start: create the configured admin if the database has no admin yet."""
    settings = resources.settings
    if not settings.bootstrap_admin_email or settings.bootstrap_admin_password is None:
        return
    async with resources.sessions() as session:
        if await users.any_admin_exists(session):
            return
    await create_admin(
        resources,
        email=settings.bootstrap_admin_email,
        password=settings.bootstrap_admin_password.get_secret_value(),
    )
