"""Access tokens (JWT, HS256) and opaque refresh tokens.

Access tokens carry `sub`, `exp`, `iat`, `nbf`, `jti`, `iss`, `aud`,
`scope`, `sid` (the session, docs/security.md "Sessions") and `gen` (the
account's token generation: a password reset or an email change moves it
on, and older tokens stop), and name their signing key in the `kid` header. Verification pins
HS256 (so `alg: none` and algorithm switching fail), accepts every
configured key (so keys can rotate, see docs/security.md) and requires every
claim. Refresh tokens and the tokens in mail links are random strings; only
their SHA-256 is stored.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from nuell_gateway.config import Settings

ALGORITHM = "HS256"
# Tokens issued before sessions existed have no `sid`: refused, so their
# clients refresh once into a session that can be ended.
REQUIRED_CLAIMS = ["sub", "exp", "iat", "nbf", "jti", "iss", "aud", "scope", "sid"]
VERIFIED_TOKEN_CACHE_SIZE = 4096
# Tolerated clock difference between the issuing and the verifying process.
LEEWAY_SECONDS = 5


class InvalidTokenError(Exception):
    """The access token cannot be trusted; the message is for logs only."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    user_id: uuid.UUID
    scopes: frozenset[str]
    token_id: str
    expires_at: int
    not_before: int
    # The account's token generation when issued (`gen`, 0 when absent).
    generation: int
    # The session the token belongs to (`sid`).
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    expires_in: int


class AccessTokens:
    """Issues and verifies access tokens with the configured keys."""

    def __init__(self, settings: Settings) -> None:
        self._keys = settings.signing_keys
        self._signing_kid = next(iter(self._keys))
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._ttl = settings.access_token_ttl_seconds
        # A client sends the same token on every call for up to 30 minutes;
        # decoding and checking it once per process saves most of the cost.
        # Only valid tokens are remembered (a raised error is not cached).
        self._verified = functools.lru_cache(maxsize=VERIFIED_TOKEN_CACHE_SIZE)(
            self._verify_signature_and_claims
        )

    def issue(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        scopes: str,
        generation: int = 0,
        issued_at: int | None = None,
        token_id: str | None = None,
    ) -> IssuedAccessToken:
        """A signed token; the same `issued_at` and `token_id` give the same
        token again (Refresh's reuse grace answers a retry with it)."""
        now = int(time.time()) if issued_at is None else issued_at
        claims = {
            "sub": str(user_id),
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": token_id or uuid.uuid4().hex,
            "iss": self._issuer,
            "aud": self._audience,
            "scope": scopes,
            "gen": generation,
            "sid": str(session_id),
        }
        token = jwt.encode(
            claims,
            self._keys[self._signing_kid],
            algorithm=ALGORITHM,
            headers={"kid": self._signing_kid},
        )
        return IssuedAccessToken(token=token, expires_in=self._ttl - (int(time.time()) - now))

    def verify(self, token: str) -> AccessClaims:
        """The token's claims, or `InvalidTokenError` for any doubt at all."""
        claims = self._verified(token)
        # The signature and claims were checked once; time moves on, so the
        # lifetime is checked on every use.
        now = time.time()
        if now > claims.expires_at + LEEWAY_SECONDS or now < claims.not_before - LEEWAY_SECONDS:
            raise InvalidTokenError("ExpiredSignatureError")
        return claims

    def _verify_signature_and_claims(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(str(header.get("kid", "")))
            if key is None:
                raise InvalidTokenError("unknown key id")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS, "strict_aud": True},
            )
            return AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])),
                scopes=frozenset(str(claims["scope"]).split()),
                token_id=str(claims["jti"]),
                expires_at=int(claims["exp"]),
                not_before=int(claims["nbf"]),
                generation=int(claims.get("gen", 0)),
                session_id=uuid.UUID(str(claims["sid"])),
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidTokenError(type(exc).__name__) from None


@dataclass(frozen=True, slots=True)
class NewOpaqueToken:
    """A refresh token or a mail link's token: the value to hand out and the digest to store."""

    value: str
    digest: bytes


def new_opaque_token() -> NewOpaqueToken:
    """256 bits from the OS CSPRNG, URL-safe (43 characters); only the digest is ever stored."""
    value = secrets.token_urlsafe(32)
    return NewOpaqueToken(value=value, digest=opaque_token_digest(value))


def opaque_token_digest(value: str) -> bytes:
    """SHA-256 suffices: the token is random, so there is nothing to brute-force."""
    return hashlib.sha256(value.encode()).digest()
