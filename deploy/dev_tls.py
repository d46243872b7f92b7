"""A development certificate for the edge's TLS listener, made with trustme.

    python -m deploy.dev_tls .data/tls     # what `make run` does when it is missing

Writes a local certificate authority (`ca.crt`, `ca.key`) and a server
certificate it signed for `localhost`, `127.0.0.1` and `::1` (`edge.crt`,
`edge.key`), keys readable by their owner only. Trust `ca.crt` in a browser or
pass it to a client (`curl --cacert`, `grpcurl -cacert`) to call
https://localhost:8443 without warnings. They live under `.data/`, which git
ignores: never commit them, never use them outside this machine.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

# Short enough to be thrown away, long enough not to expire under a developer
# (and within the 825 days Apple's platforms accept for a server certificate).
VALID_DAYS = 397
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevCertificate:
    ca_cert: Path
    cert: Path
    key: Path


def paths(folder: Path) -> DevCertificate:
    return DevCertificate(folder / "ca.crt", folder / "edge.crt", folder / "edge.key")


def ensure_dev_certificate(folder: Path) -> tuple[DevCertificate, bool]:
    """The certificate under `folder`, made first if any part is missing;
    and whether it was made now."""
    wanted = paths(folder)
    if all(path.is_file() for path in (wanted.ca_cert, wanted.cert, wanted.key)):
        return wanted, False
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = trustme.CA(organization_name="Nuell", organization_unit_name="local development CA")
    now = datetime.now(UTC)
    edge = ca.issue_cert(
        *SERVER_NAMES,
        common_name="localhost",
        organization_name="Nuell",
        organization_unit_name="edge",
        # trustme's default starts in 2000: too long a validity for browsers.
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=VALID_DAYS),
    )
    # Made in a scratch folder and moved in together, so an interrupted run
    # never leaves a key without its certificate.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".making-") as scratch_name:
        scratch = Path(scratch_name)
        made = {
            "ca.key": ca.private_key_pem,
            "ca.crt": ca.cert_pem,
            "edge.key": edge.private_key_pem,
            "edge.crt": edge.cert_chain_pems[0],
        }
        for name, blob in made.items():
            (scratch / name).touch(mode=0o600 if name.endswith(".key") else 0o644)
            blob.write_to_path(scratch / name)
        for name in made:
            (scratch / name).replace(folder / name)
    return wanted, True


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} FOLDER", file=sys.stderr)
        return 2
    made, fresh = ensure_dev_certificate(Path(sys.argv[1]))
    print(f"{'made' if fresh else 'kept'} {made.cert} (trust {made.ca_cert})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
