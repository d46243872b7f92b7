"""The embedded PostgreSQL path that `make run` uses when DATABASE_URL is unset.

Runs even when the suite itself uses a server from DATABASE_URL, so both
paths are covered on every machine.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from nuell_gateway.db.embedded import start_embedded_postgres
from nuell_gateway.db.schema import upgrade_to_head
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.database import scratch_dir

# Each phase runs in its own process: the embedded server stops when the
# process that started it exits, as it does when `make run` ends.
_PHASE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import psycopg
    from nuell_gateway.db.embedded import start_embedded_postgres
    url = start_embedded_postgres(Path(sys.argv[1]))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (note text)")
        if sys.argv[2] == "write":
            conn.execute("INSERT INTO kept VALUES ('still here')")
        print(conn.execute("SELECT count(*) FROM kept").fetchone()[0])
    """
)


def _phase(data_dir: Path, action: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _PHASE, str(data_dir), action],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def test_embedded_data_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "postgres"
    assert _phase(data_dir, "write") == "1"
    assert _phase(data_dir, "read") == "1"
    assert (data_dir / "PG_VERSION").exists()


async def test_gateway_serves_on_the_embedded_database() -> None:
    url = make_url(start_embedded_postgres(scratch_dir() / "postgres", delete_on_exit=True))
    url = url.set(drivername="postgresql+psycopg")
    upgrade_to_head(url)
    gateway = await Gateway.start(make_settings(url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await gateway.stop()
