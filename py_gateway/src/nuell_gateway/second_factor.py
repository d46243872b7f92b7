"""Two-factor sign-in with TOTP (RFC 6238, pyotp) and recovery codes.

- The secret is stored encrypted with AES-GCM under the first
  NUELL_TOTP_KEYS key (its id stored beside it); every configured key
  decrypts, so keys rotate like the JWT keys. It is never logged.
- A code is accepted for the current 30-second step or one either side,
  and at most once: the step of the last accepted code is stored, and only
  a later step is accepted after it.
- Ten recovery codes of 80 random bits each, stored as SHA-256 (nothing to
  brute-force at that length), shown once, each usable once.
- Enrolment is two-step: EnrollTotp stores an unconfirmed secret (nothing
  changes at sign-in), ConfirmTotp turns it on with a code from the app.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from enum import Enum

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway import audit, throttling
from nuell_gateway.audit import Event
from nuell_gateway.authz import Caller
from nuell_gateway.db import second_factor as factors
from nuell_gateway.db import users
from nuell_gateway.db.models import TotpFactor
from nuell_gateway.errors import FailedPrecondition, Unauthenticated
from nuell_gateway.resources import Resources

ISSUER = "Nuell"
STEP_SECONDS = 30
RECOVERY_CODES = 10
# Replaced in tests to pin the time codes are checked against.
clock: Callable[[], float] = time.time


class CodeKind(Enum):
    TOTP = "totp"
    RECOVERY = "recovery_code"


def wrong_code() -> Unauthenticated:
    return Unauthenticated("the code is wrong or was used already", reason="INVALID_MFA_CODE")


def _aead_key(secret: bytes) -> AESGCM:
    # The configured secret is any string of 32+ bytes; AES-256 wants exactly 32.
    return AESGCM(hashlib.sha256(b"nuell totp secret\0" + secret).digest())


def encrypt_secret(resources: Resources, secret: str, user_id: uuid.UUID) -> tuple[str, bytes]:
    keys = resources.settings.totp_encryption_keys
    if not keys:
        raise FailedPrecondition(
            "two-factor sign-in is not configured on this server", reason="TOTP_NOT_CONFIGURED"
        )
    key_id, key = next(iter(keys.items()))
    nonce = secrets.token_bytes(12)
    # The account id as associated data: a ciphertext copied to another row fails.
    sealed = _aead_key(key).encrypt(nonce, base64.b32decode(secret), user_id.bytes)
    return key_id, nonce + sealed


def decrypt_secret(resources: Resources, factor: TotpFactor) -> str:
    key = resources.settings.totp_encryption_keys.get(factor.key_id)
    if key is None:
        raise FailedPrecondition(
            "the key this account's second factor was stored with is not configured",
            reason="TOTP_KEY_MISSING",
        )
    blob = factor.secret_ciphertext
    try:
        raw = _aead_key(key).decrypt(blob[:12], blob[12:], factor.user_id.bytes)
    except InvalidTag:
        raise FailedPrecondition(
            "this account's second factor cannot be read", reason="TOTP_KEY_MISSING"
        ) from None
    return base64.b32encode(raw).decode()


def matching_step(secret: str, code: str) -> int | None:
    """The time step (now, or one either side) whose code is `code`."""
    totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
    now = clock()
    step = int(now // STEP_SECONDS)
    for candidate in (step, step - 1, step + 1):
        if hmac.compare_digest(totp.at(candidate * STEP_SECONDS), code):
            return candidate
    return None


def normalize_recovery_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def recovery_digest(code: str) -> bytes:
    return hashlib.sha256(normalize_recovery_code(code).encode()).digest()


def new_recovery_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 80 bits, 16 chars
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return codes


async def accept_code(
    resources: Resources, db: AsyncSession, *, factor: TotpFactor, code: str
) -> CodeKind | None:
    """Spend `code` (a TOTP code or a recovery code) in `db`'s transaction."""
    cleaned = "".join(code.split())
    if cleaned.isdigit() and len(cleaned) == 6:
        step = matching_step(decrypt_secret(resources, factor), cleaned)
        if step is not None and await factors.use_step(db, user_id=factor.user_id, step=step):
            return CodeKind.TOTP
        return None
    if await factors.use_recovery_code(db, user_id=factor.user_id, digest=recovery_digest(code)):
        return CodeKind.RECOVERY
    return None


async def enroll(
    resources: Resources, *, account: Caller, current_password: str
) -> tuple[str, str]:
    """A new unconfirmed secret and its otpauth:// URI."""
    user = await throttling.caller_with_password(
        resources, account=account, password=current_password
    )
    secret = pyotp.random_base32()  # 160 bits, as RFC 4226 recommends
    key_id, ciphertext = encrypt_secret(resources, secret, user.id)
    async with resources.sessions.begin() as db:
        if not await factors.put_pending_factor(
            db, user_id=user.id, key_id=key_id, ciphertext=ciphertext
        ):
            raise FailedPrecondition(
                "two-factor sign-in is on already; turn it off first", reason="TOTP_ALREADY_ENABLED"
            )
    uri = pyotp.TOTP(secret, interval=STEP_SECONDS).provisioning_uri(
        name=user.email, issuer_name=ISSUER
    )
    return secret, uri


async def confirm(resources: Resources, *, account: Caller, code: str) -> list[str]:
    """Turn the enrolled secret on; the recovery codes, shown this once."""
    attempts = throttling.Attempts.of_account(resources, account.user_id)
    await attempts.check()
    codes = new_recovery_codes()
    async with resources.sessions.begin() as db:
        factor = await factors.get_factor(db, user_id=account.user_id)
        if factor is None or factor.confirmed_at is not None:
            raise FailedPrecondition(
                "start with EnrollTotp" if factor is None else "two-factor sign-in is on already",
                reason="TOTP_NOT_ENROLLED" if factor is None else "TOTP_ALREADY_ENABLED",
            )
        step = matching_step(decrypt_secret(resources, factor), code)
        accepted = step is not None and await factors.use_step(
            db, user_id=account.user_id, step=step
        )
        if accepted:
            await factors.confirm_factor(db, user_id=account.user_id)
            await _set_enabled(db, account.user_id, enabled=True)
            await factors.replace_recovery_codes(
                db, user_id=account.user_id, digests=[recovery_digest(c) for c in codes]
            )
            await audit.record_own(db, Event.TOTP_ENROLLED, caller=account)
    if not accepted:
        await attempts.failed(Event.MFA_FAILED, reason="wrong_code")
        raise wrong_code()
    await attempts.succeeded()
    return codes


async def disable(resources: Resources, *, account: Caller, code: str) -> None:
    """Turn two-factor sign-in off with a current code or a recovery code."""
    attempts = throttling.Attempts.of_account(resources, account.user_id)
    await attempts.check()
    async with resources.sessions.begin() as db:
        factor = await factors.get_factor(db, user_id=account.user_id)
        if factor is None or factor.confirmed_at is None:
            raise FailedPrecondition("two-factor sign-in is off", reason="TOTP_NOT_ENABLED")
        kind = await accept_code(resources, db, factor=factor, code=code)
        if kind is not None:
            await factors.remove_factor(db, user_id=account.user_id)
            await _set_enabled(db, account.user_id, enabled=False)
            await audit.record_own(db, Event.TOTP_DISABLED, caller=account, reason=kind.value)
    if kind is None:
        await attempts.failed(Event.MFA_FAILED, reason="wrong_code")
        raise wrong_code()
    await attempts.succeeded()


async def _set_enabled(db: AsyncSession, user_id: uuid.UUID, *, enabled: bool) -> None:
    """The account's `totp_enabled`, which Login reads (and the version, so etags move)."""
    await users.update_user(
        db, user_id=user_id, expected_version=None, values={"totp_enabled": enabled}
    )
