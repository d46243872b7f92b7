"""An etag from a request, decoded into the version a conditional write expects."""

from __future__ import annotations

import uuid

from nuell_gateway.convert import version_from_etag

# A version no row ever has: an etag that names none of this resource's
# versions can never match, and the refusal is explained as ABORTED.
NO_VERSION = -1


def expected_version(resource_id: uuid.UUID, etag: str) -> int | None:
    """None for no etag (write whatever is current); otherwise the version it names."""
    if not etag:
        return None
    version = version_from_etag(resource_id, etag)
    return NO_VERSION if version is None else version
