"""The ledger's database password comes from PGPASSWORD, never from the settings file.

Both deployments rely on it: the compose stack passes ``PGPASSWORD`` to pbxguard, the
systemd unit reads it from ``/etc/pbxguard/secrets.env``, and the settings' ledger URL names
no password. Checked on a PostgreSQL of the test's own that requires SCRAM passwords.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

PBXGUARD = Path(sys.executable).with_name("pbxguard")


@pytest.fixture
def password_cluster() -> Iterator[PostgresCluster]:
    """A cluster where the role pbxguard logs in over TCP with a SCRAM password only."""
    cluster = PostgresCluster()
    try:
        (cluster.data / "pg_hba.conf").write_text(
            "local all postgres trust\nhost all pbxguard 127.0.0.1/32 scram-sha-256\n",
            encoding="utf-8",
        )
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def ledger_command(
    settings: Path, password: str | None, *verb: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PBXGUARD_", "PG"))}
    env["HOME"] = str(settings.parent)  # no ~/.pgpass to fall back on
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(
        [str(PBXGUARD), "ledger", *verb, "--config", str(settings)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_ledger_logs_in_with_pgpassword(
    password_cluster: PostgresCluster, tmp_path: Path
) -> None:
    password = secrets.token_hex(16)
    password_cluster.psql(f"CREATE ROLE pbxguard LOGIN PASSWORD '{password}'")
    password_cluster.psql("CREATE DATABASE pbxguard OWNER pbxguard")
    settings = tmp_path / "pbxguard.toml"
    settings.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        "[ledger]\n"
        f'url = "postgresql+psycopg://pbxguard@127.0.0.1:{password_cluster.port}/pbxguard"\n',
        encoding="utf-8",
    )

    migrated = ledger_command(settings, password, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    with_password = ledger_command(settings, password, "--format", "json")
    assert with_password.returncode == 0, with_password.stderr
    assert with_password.stdout.strip() == "[]"  # migrated, empty, read back

    # libpq's own words: no PGPASSWORD is never sent as an empty password.
    expected = {
        None: "no password supplied",
        "not-the-password": 'password authentication failed for user "pbxguard"',
    }
    for wrong, reason in expected.items():
        refused = ledger_command(settings, wrong, "--format", "json")
        assert refused.returncode == 3
        assert reason in refused.stderr
        assert password not in refused.stderr + refused.stdout
