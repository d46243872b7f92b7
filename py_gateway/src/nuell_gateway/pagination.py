"""Opaque, tamper-evident page tokens for keyset pagination (AIP-158).

A token is `base64url(json) "." base64url(hmac)`: the JSON holds the last
row's sort key and a fingerprint of the request's filters, the HMAC (keyed
from the token signing keys) makes any edit detectable. A malformed,
tampered or foreign token is INVALID_ARGUMENT on `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from nuell_gateway.errors import FieldViolation, InvalidArgument

K = TypeVar("K", bound="Keyed")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE) -> int:
    """0 means the default; anything above the maximum is the maximum (AIP-158)."""
    return min(requested or default, MAX_PAGE_SIZE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keyed(Protocol):
    """A row of a keyset-paged listing: ordered by (created_at, id)."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID | str: ...


Position = tuple[datetime, uuid.UUID]


def derived_keys(signing_keys: Iterable[bytes], purpose: str) -> list[bytes]:
    """A key for `purpose` from each signing key, in order, so that access
    tokens, page tokens and etags never share a MAC key and all rotate with
    `NUELL_JWT_KEYS` (docs/security.md)."""
    label = f"nuell {purpose}\0".encode()
    return [hashlib.sha256(label + key).digest() for key in signing_keys]


class PageTokens:
    """Signs cursors with the first key and accepts any configured key."""

    def __init__(self, signing_keys: Iterable[bytes]) -> None:
        self._keys = derived_keys(signing_keys, "page token")

    def position(self, token: str, *, scope: str) -> Position | None:
        """Where a listing resumes: the (created_at, id) of the last row served."""
        if not token:
            return None
        cursor = self.decode(token, scope=scope)
        try:
            return datetime.fromisoformat(cursor["t"]), uuid.UUID(cursor["id"])
        except (KeyError, TypeError, ValueError):
            raise _invalid_token() from None

    def next_page(self, rows: Sequence[K], limit: int, *, scope: str) -> tuple[Sequence[K], str]:
        """The page to serve from `limit + 1` fetched rows, and the token that follows it."""
        page = rows[:limit]
        if len(rows) <= limit:
            return page, ""
        last = page[-1]
        return page, self.encode(
            {"t": last.created_at.isoformat(), "id": str(last.id)}, scope=scope
        )

    def encode(self, cursor: dict[str, Any], *, scope: str) -> str:
        payload = json.dumps({"c": cursor, "s": scope}, separators=(",", ":")).encode()
        mac = hmac.new(self._keys[0], payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}"

    def decode(self, token: str, *, scope: str) -> dict[str, Any]:
        """The cursor inside `token`, which must have been issued for `scope`."""
        try:
            payload_part, mac_part = token.split(".")
            payload, mac = _unb64(payload_part), _unb64(mac_part)
            if not any(
                hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest())
                for key in self._keys
            ):
                raise ValueError("bad signature")
            content = json.loads(payload)
            if content["s"] != scope or not isinstance(content["c"], dict):
                raise ValueError("issued for another request")
            cursor: dict[str, Any] = content["c"]
            return cursor
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _invalid_token() from None


def _invalid_token() -> InvalidArgument:
    return InvalidArgument(
        "page_token is not a token this request issued",
        reason="INVALID_PAGE_TOKEN",
        violations=[
            FieldViolation(
                field="page_token",
                description="not a page token from a previous call with the same filters",
                reason="INVALID_PAGE_TOKEN",
            )
        ],
    )
