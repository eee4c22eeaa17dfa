"""A throwaway PostgreSQL 15 cluster for the test session, and ledger URL fixtures.

The cluster lives in a temporary directory owned by the ``postgres`` OS user (initdb refuses to
run as root, and the tests run as root), listens on 127.0.0.1 on a free port and keeps its unix
socket in the same directory. ``fsync`` is off (the data is thrown away at the end) unless the
cluster is made ``durable``, as tests that crash the server need.

Import the fixtures into a test module to use them::

    from tests.support.postgres import ledger_url, postgres_cluster, postgres_url

`stoppable_postgres` is a cluster of the test's own, for tests that stop the server.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("PBXGUARD_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """A PostgreSQL cluster in a temporary directory, started and stopped on demand."""

    def __init__(self, *, durable: bool = False) -> None:
        """Create the cluster; ``durable`` keeps PostgreSQL's fsync and synchronous commits.

        Without them (the default: the data is thrown away) a commit PostgreSQL acknowledged is
        lost when the server is stopped with ``immediate``, as in a crash.
        """
        self.durable = durable
        missing = [b for b in ("initdb", "pg_ctl", "postgres", "psql") if not (PG_BIN / b).exists()]
        if missing:
            pytest.fail(
                f"PostgreSQL 15 binaries missing in {PG_BIN} ({', '.join(missing)}): "
                "install postgresql-15 (apt-get install postgresql-15) or set PBXGUARD_PG_BIN",
                pytrace=False,
            )
        self._as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="pbxguard-pg-"))
        if self._as_root:
            owner = pwd.getpwnam(PG_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.running = False
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )

    def _run(self, binary: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN / binary), *args]
        if self._as_root:
            command = ["runuser", "-u", PG_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            pytest.fail(
                f"{binary} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}",
                pytrace=False,
            )
        return result

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root}"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server at once, dropping every client connection.

        ``fast`` shuts down cleanly; ``immediate`` quits without a checkpoint, as a crash does
        (the next start recovers from the WAL).
        """
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))
            self.running = False

    def psql(self, sql: str) -> None:
        """Run one SQL statement as the superuser."""
        self._run(
            "psql",
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            PG_USER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        )

    def create_database(self) -> str:
        """Create an empty database with a random name and return its name."""
        name = f"ledger_{secrets.token_hex(6)}"
        self.psql(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, even with clients still connected."""
        if self.running:
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, database: str) -> str:
        """Return the SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        """Stop the server and remove its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start one PostgreSQL cluster for the whole test session."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """Return the URL of a fresh, empty database, dropped after the test."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a fresh ledger database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def stoppable_postgres() -> Iterator[PostgresCluster]:
    """Start a cluster of the test's own, which the test may stop and start again."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
