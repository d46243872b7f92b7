"""Who is on the other end of a call: the client's address and user agent.

Sessions and the audit trail record them. Behind Envoy the TCP peer is the
edge, so the edge names the client in `x-nuell-client-address` (its own
view, after NUELL_EDGE_TRUSTED_PROXY_HOPS; whatever a client sent under that
name is replaced). The header is believed only from a peer in
NUELL_TRUSTED_PROXIES; from anyone else the peer itself is the client, so a
caller that reaches the gateway directly cannot claim another address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from nuell_gateway.config import IPNetwork

CLIENT_ADDRESS_HEADER = "x-nuell-client-address"
USER_AGENT_MAX_CHARS = 256


@dataclass(frozen=True, slots=True)
class Client:
    ip_address: str
    user_agent: str


UNKNOWN = Client(ip_address="", user_agent="")
_current: ContextVar[Client] = ContextVar("nuell_client", default=UNKNOWN)


def identify(
    metadata: Iterable[tuple[str, str | bytes]] | None, peer: str, trusted: Iterable[IPNetwork]
) -> Client:
    """The call's client, remembered for `current()`; set once per call by the boundary."""
    headers = {key: value for key, value in metadata or () if isinstance(value, str)}
    address = _peer_address(peer)
    forwarded = _address(headers.get(CLIENT_ADDRESS_HEADER, ""))
    if forwarded and address and any(ipaddress.ip_address(address) in net for net in trusted):
        address = forwarded
    client = Client(ip_address=address, user_agent=_printable(headers.get("user-agent", "")))
    _current.set(client)
    return client


def current() -> Client:
    return _current.get()


def _peer_address(peer: str) -> str:
    """`ipv4:10.0.0.1:5000` or `ipv6:[::1]:5000` -> the address; anything else -> ''."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return _address(rest.rpartition(":")[0])
    if kind == "ipv6":
        return _address(rest.rpartition(":")[0].strip("[]"))
    return ""


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return ""


def _printable(text: str) -> str:
    """Printable characters only (no ANSI escapes or newlines in a listing), capped."""
    return "".join(ch for ch in text if ch.isprintable())[:USER_AGENT_MAX_CHARS]
