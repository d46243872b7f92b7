"""A development certificate for the edge's TLS listener, made with openssl.

    python -m deploy.dev_tls .data/tls     # what `make run` does when it is missing

Writes a local certificate authority (`ca.crt`, `ca.key`) and a server
certificate it signed for `localhost`, `127.0.0.1` and `::1` (`edge.crt`,
`edge.key`), all under the folder given, keys readable by their owner only.
Trust `ca.crt` in a browser or pass it to a client (`curl --cacert`,
`grpcurl -cacert`) to call https://localhost:8443 without warnings. These
files live under `.data/`, which git ignores: never commit them, never use
them outside this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Short enough to be thrown away, long enough not to expire under a developer
# (and within the 825 days Apple's platforms accept for a server certificate).
VALID_DAYS = 397
SERVER_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"


class DevTlsError(Exception):
    """openssl is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class DevCertificate:
    ca_cert: Path
    cert: Path
    key: Path


def paths(folder: Path) -> DevCertificate:
    return DevCertificate(folder / "ca.crt", folder / "edge.crt", folder / "edge.key")


def ensure_dev_certificate(folder: Path) -> tuple[DevCertificate, bool]:
    """The certificate under `folder`, made first if any part is missing.

    Returns it and whether it was made now.
    """
    wanted = paths(folder)
    if all(path.is_file() for path in (wanted.ca_cert, wanted.cert, wanted.key)):
        return wanted, False
    openssl = shutil.which("openssl")
    if openssl is None:
        raise DevTlsError(
            "openssl not found, needed once to make the development TLS certificate: "
            "apt-get install openssl (or set NUELL_EDGE_TLS_CERT and NUELL_EDGE_TLS_KEY)"
        )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Made in a scratch folder and moved in together, so an interrupted run
    # never leaves a key without its certificate.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".making-") as scratch_name:
        scratch = Path(scratch_name)
        made = paths(scratch)
        ca_key = scratch / "ca.key"
        extensions = scratch / "edge.ext"
        extensions.write_text(
            f"subjectAltName={SERVER_NAMES}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n",
            encoding="utf-8",
        )
        ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl(
            openssl, "req", "-x509", *ec_key, "-keyout", ca_key, "-out", made.ca_cert,
            "-days", str(VALID_DAYS), "-subj", "/CN=Nuell local development CA",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        request = scratch / "edge.csr"
        _openssl(
            openssl, "req", "-new", *ec_key, "-keyout", made.key, "-out", request,
            "-subj", "/CN=localhost",
        )  # fmt: skip
        _openssl(
            openssl, "x509", "-req", "-in", request, "-CA", made.ca_cert, "-CAkey", ca_key,
            "-set_serial", f"0x{os.urandom(16).hex()}", "-days", str(VALID_DAYS),
            "-extfile", extensions, "-out", made.cert,
        )  # fmt: skip
        for key in (ca_key, made.key):
            key.chmod(0o600)
        for source in (ca_key, made.ca_cert, made.key, made.cert):
            source.replace(folder / source.name)
    return wanted, True


def _openssl(openssl: str, *args: str | Path) -> None:
    result = subprocess.run(
        [openssl, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DevTlsError(f"openssl {args[0]} failed making the development certificate: {reason}")


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} FOLDER", file=sys.stderr)
        return 2
    try:
        made, fresh = ensure_dev_certificate(Path(sys.argv[1]))
    except DevTlsError as exc:
        print(f"dev_tls: {exc}", file=sys.stderr)
        return 1
    print(f"{'made' if fresh else 'kept'} {made.cert} (trust {made.ca_cert})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
