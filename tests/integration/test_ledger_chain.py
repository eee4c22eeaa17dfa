"""The ledger is tamper-evident: a change, a deletion or a forged row is named by `verify`.

Whoever can write an SQLite file can drop the triggers that refuse UPDATE and DELETE; these
tests do exactly that and then check that ``pbxguard ledger verify`` exits non-zero naming the
first row that was touched. On PostgreSQL the daemon writes as a role that may only SELECT and
INSERT: it cannot update, delete, truncate, disable or drop a trigger at all.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from pbxguard.adapters.ledger import CallLog, LedgerDatabase, OffenceBook, chain
from pbxguard.adapters.ledger.audit import verify_ledger
from pbxguard.adapters.ledger.schema import metadata
from pbxguard.entrypoints.cli import main
from tests.integration.test_ledger import DT1, LD2, SHANGHAI, call, draft, local
from tests.integration.test_predial import MONDAY_10AM, FakeClock, running_service
from tests.support.guard import until
from tests.support.postgres import PostgresCluster, postgres_cluster  # noqa: F401


def settings_for(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "pbxguard.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[ledger]\nurl = "{url}"\n', encoding="utf-8"
    )
    return config


def fill(url: str, count: int = 5, site: str = "hq") -> None:
    database = LedgerDatabase.open(url, site=site)
    try:
        database.migrate()
        book = OffenceBook(database)
        for n in range(count):
            rule = DT1 if n % 2 else LD2
            fields = {} if rule is DT1 else {"number_class": "international"}
            at = local(2026, 11, 2) + timedelta(hours=n)
            book.record(draft(f"k-{site}-{n}", rule, at, **fields), rule, timezone=SHANGHAI)
    finally:
        database.close()


def verify(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # what the set-up logged
    status = main(["ledger", "verify", "--config", str(config)])
    out, err = capsys.readouterr()
    return status, out, err


def verify_json(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()  # what the set-up logged
    status = main(["ledger", "verify", "--json", "--config", str(config)])
    out, _ = capsys.readouterr()
    return status, json.loads(out)


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "ledger.sqlite3"
    fill(f"sqlite:///{path}")
    return path, settings_for(tmp_path, f"sqlite:///{path}")


def tamper(path: Path, *statements: str) -> None:
    """Change the file as someone with write access would: triggers first."""
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)


def test_an_untouched_ledger_verifies_and_prints_heads_to_keep(
    sqlite_ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config = sqlite_ledger
    status, out, _ = verify(config, capsys)
    assert status == 0
    assert "账本完整 ledger intact" in out
    assert "offences" in out
    status, report = verify_json(config, capsys)
    assert status == 0
    assert report["intact"] is True
    heads = {(h["table"], h["site"]): h["seq"] for h in report["heads"]}  # type: ignore[attr-defined]
    assert heads[("offences", "hq")] == 5


def test_a_changed_amount_is_named(
    sqlite_ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = sqlite_ledger
    tamper(
        path,
        "DROP TRIGGER offences_no_update",
        "UPDATE offences SET amount = '0.00' WHERE seq = 3",
    )
    status, _, err = verify(config, capsys)
    assert status == 1
    [(row_id,)] = sqlite3.connect(path).execute("SELECT id FROM offences WHERE seq = 3").fetchall()
    assert f"账本被篡改 LEDGER TAMPERED: offences 编号 id {row_id} (seq 3" in err
    assert "changed" in err


def test_a_deleted_row_is_named_by_the_gap_it_leaves(
    sqlite_ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = sqlite_ledger
    tamper(
        path,
        "DROP TRIGGER offences_no_delete",
        "DROP TRIGGER IF EXISTS offences_append_only",
        "DELETE FROM offences WHERE seq = 2",
    )
    status, report = verify_json(config, capsys)
    assert status == 1
    [first, *_] = report["breaks"]  # type: ignore[misc]
    assert (first["table"], first["kind"], first["seq"]) == ("offences", "deleted", 3)


def test_a_row_forged_into_the_chain_is_named(
    sqlite_ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = sqlite_ledger
    # A copy of the newest row, as the next one, with a made-up hash: out of order.
    columns = [
        row[1]
        for row in sqlite3.connect(path).execute("PRAGMA table_info(offences)")
        if row[1] not in ("id", "seq", "key", "prev_hash", "hash")
    ]
    names = ", ".join(columns)
    tamper(
        path,
        f"INSERT INTO offences ({names}, key, seq, prev_hash, hash) "
        f"SELECT {names}, 'forged', 6, '{'1' * 64}', '{'2' * 64}' FROM offences WHERE seq = 5",
    )
    status, report = verify_json(config, capsys)
    assert status == 1
    [first] = report["breaks"]  # type: ignore[misc]
    assert (first["kind"], first["seq"]) == ("out_of_order", 6)


def test_a_row_written_outside_the_chain_is_named(
    sqlite_ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = sqlite_ledger
    columns = [
        row[1]
        for row in sqlite3.connect(path).execute("PRAGMA table_info(offences)")
        if row[1] not in ("id", "seq", "key", "prev_hash", "hash")
    ]
    names = ", ".join(columns)
    tamper(
        path,
        f"INSERT INTO offences ({names}, key) SELECT {names}, 'sneaked' FROM offences "
        "WHERE seq = 1",
    )
    status, report = verify_json(config, capsys)
    assert status == 1
    kinds = [b["kind"] for b in report["breaks"]]  # type: ignore[attr-defined]
    assert "unchained" in kinds


def test_a_rewritten_chain_verifies_but_its_digest_gives_it_away(
    sqlite_ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Recomputing every hash after a change defeats `verify`, not the digest kept outside."""
    path, config = sqlite_ledger
    status, before = verify_json(config, capsys)
    assert status == 0
    tamper(
        path,
        "DROP TRIGGER offences_no_update",
        "UPDATE offences SET amount = '0.00' WHERE seq = 1",
    )
    database = LedgerDatabase.open(f"sqlite:///{path}", site="hq")
    try:
        # The attacker has pbxguard's source: read the rows with the ledger's own types,
        # re-link them from the genesis and write the new hashes back.
        offences = metadata.tables["offences"]
        with database.read() as session:
            rows = [
                dict(r)
                for r in session.execute(select(offences).order_by(offences.c.seq)).mappings()
            ]
        chain.link("offences", chain.Head("offences", "hq", 0, chain.GENESIS), rows)
        with sqlite3.connect(path) as conn:
            for row in rows:
                conn.execute(
                    "UPDATE offences SET prev_hash = ?, hash = ? WHERE id = ?",
                    (row["prev_hash"], row["hash"], row["id"]),
                )
        assert verify_ledger(database).intact
    finally:
        database.close()
    status, after = verify_json(config, capsys)
    assert status == 0
    assert after["digest"] != before["digest"]


def test_each_site_has_its_own_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    fill(url, 3, site="beijing")
    fill(url, 4, site="shanghai")
    config = settings_for(tmp_path, url)
    status, report = verify_json(config, capsys)
    assert status == 0
    heads = {(h["table"], h["site"]): h["seq"] for h in report["heads"]}  # type: ignore[attr-defined]
    assert heads[("offences", "beijing")] == 3
    assert heads[("offences", "shanghai")] == 4


# -- PostgreSQL: the daemon's role can append and read, nothing else -----------------------


@pytest.mark.postgres
def test_the_writer_role_can_append_but_never_alter(
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> None:
    name = postgres_cluster.create_database()
    role = f"writer_{name[-6:]}"
    postgres_cluster.psql(f"CREATE ROLE {role} LOGIN")
    owner_url = postgres_cluster.url(name)
    writer_url = owner_url.replace("://pbxguard@", f"://{role}@", 1)
    if writer_url == owner_url:  # the cluster's superuser has another name
        user = owner_url.split("://", 1)[1].split("@", 1)[0]
        writer_url = owner_url.replace(f"://{user}@", f"://{role}@", 1)
    try:
        owner = LedgerDatabase.open(owner_url, site="hq")
        owner.migrate(grant_to=role)
        owner.close()

        writer = LedgerDatabase.open(writer_url, site="hq")
        try:
            writer.require_current()
            book = OffenceBook(writer)
            stored = book.record(draft("w-1", DT1, local(2026, 11, 3)), DT1, timezone=SHANGHAI)
            assert stored.amount > 0
            assert len(book.offences()) == 1
        finally:
            writer.close()

        engine = create_engine(writer_url)
        refused = []
        try:
            for statement in (
                "UPDATE offences SET amount = 0",
                "DELETE FROM offences",
                "TRUNCATE offences",
                "ALTER TABLE offences DISABLE TRIGGER ALL",
                "DROP TRIGGER offences_append_only ON offences",
                "DROP TABLE offences",
                "CREATE TABLE sneaky (id int)",
            ):
                with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
                    conn.execute(text(statement))
                refused.append(str(caught.value.orig).splitlines()[0])
        finally:
            engine.dispose()
        # Refused by privilege, before any trigger runs: the writer owns nothing.
        assert len(refused) == 7
        assert all("permission denied" in r or "must be owner" in r for r in refused), refused

        check = LedgerDatabase.open(owner_url, site="hq")
        try:
            assert verify_ledger(check).intact
            assert len(OffenceBook(check).offences()) == 1
        finally:
            check.close()
    finally:
        postgres_cluster.drop_database(name)


async def test_the_daemon_checks_the_chain_at_start_and_raises_an_alert(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    fill(f"sqlite:///{path}", site="reference")
    tamper(
        path, "DROP TRIGGER offences_no_update", "UPDATE offences SET amount = '1.00' WHERE seq = 4"
    )
    with capture_logs() as logs:
        async with running_service(tmp_path, FakeClock(MONDAY_10AM)) as run:
            await until(lambda: any(e["event"] == "ledger chain broken" for e in logs))
            await until(lambda: run.parts.guard.stats.alerts >= 1)
    [broken] = [e for e in logs if e["event"] == "ledger chain broken"]
    assert "offences row" in broken["detail"]
    assert "(seq 4)" in broken["detail"]
    assert "changed" in broken["detail"]


def test_monthly_reports_carry_the_chain_digest_to_keep(
    sqlite_ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, config = sqlite_ledger
    database = LedgerDatabase.open(f"sqlite:///{path}", site="hq")
    try:  # an answered long-distance call: one register entry for November
        assert CallLog(database).record_call(call("1795000000.7", local(2026, 11, 4, 10)))
    finally:
        database.close()
    _, report = verify_json(config, capsys)
    digest = str(report["digest"])
    assert main(["ledger", "--month", "2026-11", "--config", str(config)]) == 0
    out, _ = capsys.readouterr()
    assert out.rstrip().splitlines()[-1].endswith(digest)
    assert "链头摘要 chain digest" in out
    assert main(["register", "--month", "2026-11", "--config", str(config)]) == 0
    out, _ = capsys.readouterr()
    assert "01088881234" in out
    assert out.rstrip().splitlines()[-1].endswith(digest)
    workbook = tmp_path / "ledger.xlsx"
    args = ["ledger", "--month", "2026-11", "--format", "xlsx", "--output", str(workbook)]
    assert main([*args, "--config", str(config)]) == 0
    sheet = load_workbook(workbook, read_only=True).active
    assert sheet is not None
    cells = [row[0] for row in sheet.iter_rows(values_only=True) if row and row[0]]
    assert str(cells[-1]).endswith(digest)
