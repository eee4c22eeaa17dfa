"""The ledger's database: connections, transactions, migrations and what its errors mean.

Theory of operation
-------------------
`LedgerDatabase` wraps one SQLAlchemy engine (plain Core, synchronous drivers: the standard
library's sqlite3 and psycopg 3). It hands out units of work: `write()` opens a transaction that
takes the write lock up front (SQLite ``BEGIN IMMEDIATE``; on PostgreSQL each hash-chain stream
takes a transaction-scoped advisory lock when it appends), `read()` one that only reads. A
database opened ``read_only`` never writes and never migrates: an auditor can point pbxguard at
a read-only copy.

Rows are appended through `LedgerSession.append`, which gives them their site and their place
in the hash chain (`pbxguard.adapters.ledger.chain`) inside the same transaction.

Errors are classified by what they mean, not by the wrapper they arrive in (a PostgreSQL
shutdown comes as a ``DBAPIError`` around psycopg's ``AdminShutdown``): a database that is down,
restarting, locked, out of connections or that lost a serialization race is
`LedgerUnavailable` (retry with backoff, for ever); a write the append-only triggers refused is
`LedgerIntegrityError`; a duplicate key is `LedgerConflict`; anything else `LedgerError`, which
retrying cannot fix.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Insert, Select, bindparam, create_engine, event, exc, func, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url

from pbxguard.adapters.ledger import chain
from pbxguard.adapters.ledger.schema import APPEND_ONLY_MARKER, metadata
from pbxguard.errors import (
    LedgerConflict,
    LedgerError,
    LedgerIntegrityError,
    LedgerUnavailable,
)

_log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
_WRITE = "pbxguard_write"

# PostgreSQL SQLSTATE codes (and classes) that mean "try again later".
_TRANSIENT_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down)
        "57014",  # query_canceled (statement timeout)
        "53300",  # too_many_connections
        "25006",  # read_only_sql_transaction (a standby before promotion)
    }
)
_TRANSIENT_CLASSES = ("08", "53", "58")  # connection exceptions, resources, system errors
_CONFLICT_STATES = frozenset({"23505"})  # unique_violation
_SQLITE_TRANSIENT = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
_SQLITE_CONFLICT = frozenset(
    {
        getattr(sqlite3, "SQLITE_CONSTRAINT_UNIQUE", 2067),
        getattr(sqlite3, "SQLITE_CONSTRAINT_PRIMARYKEY", 1555),
    }
)


def aware(value: datetime, what: str) -> datetime:
    """Return ``value``, a time the ledger stores, if it carries its timezone.

    Raises:
        LedgerError: ``value`` is naive (``what`` names it in the message).
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(f"{what} must be a timezone-aware datetime")
    return value


def _dbapi_error(error: BaseException) -> BaseException:
    seen = error
    while isinstance(seen, exc.StatementError) and seen.orig is not None:
        seen = seen.orig
    return seen


def classify(error: BaseException) -> type[LedgerError]:
    """Return the ledger error class that says what a database library's ``error`` means."""
    if isinstance(error, LedgerError):
        return type(error)
    if APPEND_ONLY_MARKER in str(error):
        return LedgerIntegrityError
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return LedgerUnavailable
    if isinstance(error, exc.DisconnectionError | exc.TimeoutError | OSError | TimeoutError):
        return LedgerUnavailable
    cause = _dbapi_error(error)
    state = getattr(cause, "sqlstate", None)
    if isinstance(state, str) and state:
        if state in _CONFLICT_STATES:
            return LedgerConflict
        if state in _TRANSIENT_STATES or state.startswith(_TRANSIENT_CLASSES):
            return LedgerUnavailable
        return LedgerError
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        if code in _SQLITE_CONFLICT:
            return LedgerConflict
        if code is not None and (code & 0xFF) in _SQLITE_TRANSIENT:
            return LedgerUnavailable
        if code is None and "locked" in str(cause):
            return LedgerUnavailable
        return LedgerError
    module = type(cause).__module__
    if module.startswith("psycopg") and isinstance(
        error, exc.OperationalError | exc.InterfaceError
    ):
        # A psycopg error without a SQLSTATE is a client-side connection failure.
        return LedgerUnavailable
    if isinstance(error, exc.InterfaceError):
        return LedgerUnavailable
    return LedgerError


def translate_error(error: BaseException) -> LedgerError:
    """Return the ledger error that stands for ``error``."""
    if isinstance(error, LedgerError):
        return error
    kind = classify(error)
    message = (
        str(_dbapi_error(error)).strip().splitlines()[0] if str(error) else type(error).__name__
    )
    if kind is LedgerIntegrityError:
        return LedgerIntegrityError(f"ledger entries cannot be changed or deleted: {message}")
    if kind is LedgerUnavailable:
        return LedgerUnavailable(f"ledger database unavailable: {message}")
    if kind is LedgerConflict:
        return LedgerConflict(f"ledger entry already written: {message}")
    return LedgerError(f"ledger database error: {type(_dbapi_error(error)).__name__}: {message}")


@contextmanager
def translated() -> Iterator[None]:
    """Turn database library errors raised inside the block into ledger errors."""
    try:
        yield
    except LedgerError:
        raise
    except (exc.SQLAlchemyError, sqlite3.Error, OSError, TimeoutError) as error:
        raise translate_error(error) from error
    except Exception as error:
        if type(error).__module__.startswith("psycopg"):
            raise translate_error(error) from error
        raise


def sync_url(url: str) -> URL:
    """Parse a ledger URL, mapping the async drivers of older settings to the ones used now.

    ``sqlite+aiosqlite:///path`` and ``sqlite:///path`` use the standard library's sqlite3;
    ``postgresql+asyncpg://…`` and ``postgresql://…`` use psycopg 3.

    Raises:
        LedgerError: not a URL, or not SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise LedgerError(f"not a database URL: {url!r}") from error
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise LedgerError("an SQLite ledger needs a file: sqlite:///path")
        return parsed.set(drivername="sqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise LedgerError(f"unsupported ledger database {backend!r}: use SQLite or PostgreSQL")


class LedgerSession:
    """One transaction on the ledger (a unit of work): reads, and appends to the chain."""

    def __init__(self, connection: Connection, site: str, *, writable: bool) -> None:
        self.connection = connection
        self.site = site
        self.writable = writable
        self._heads: dict[str, chain.Head] = {}
        self._postgres = connection.dialect.name == "postgresql"

    def execute(self, statement: Any, parameters: Any = None) -> Any:
        """Run a statement in this transaction."""
        return self.connection.execute(statement, parameters)

    def head(self, table: str, site: str | None = None) -> chain.Head:
        """Return the newest row of ``table``'s stream for ``site`` (this session's by default)."""
        site = self.site if site is None else site
        cached = self._heads.get(f"{table}\t{site}")
        if cached is not None:
            return cached
        if self._postgres and self.writable:
            self.connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:stream, 0))"),
                {"stream": f"pbxguard-chain:{table}:{site}"},
            )
        row = self.connection.execute(_statements(table).head, {"site": site}).first()
        head = (
            chain.Head(table, site, 0, chain.GENESIS)
            if row is None
            else chain.Head(table, site, int(row.seq), str(row.hash))
        )
        self._heads[f"{table}\t{site}"] = head
        return head

    def append(self, table: str, rows: Sequence[dict[str, Any]], *, ids: bool = True) -> list[int]:
        """Append ``rows`` to ``table`` in order, chained; return their ids (with ``ids``).

        Every row gets this session's site unless it names one.
        """
        if not self.writable:
            raise LedgerError("the ledger is open read-only")
        if not rows:
            return []
        by_site: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            row.setdefault("site", self.site)
            by_site.setdefault(row["site"], []).append(row)
        for site, group in by_site.items():
            self._heads[f"{table}\t{site}"] = chain.link(table, self.head(table, site), group)
        # One executemany for the whole batch: building and compiling a statement for every
        # row cost more than the database's own work. (SQLite cannot promise the order of a
        # multi-row RETURNING, so the ids are read back by the rows' places in the chain.)
        statements = _statements(table)
        for run in _same_columns(rows):
            self.connection.execute(statements.insert, run)
        if not ids:
            return []
        placed: dict[tuple[str, int], int] = {}
        for site, group in by_site.items():
            found = self.connection.execute(
                statements.placed,
                {"site": site, "first": group[0]["seq"], "last": group[-1]["seq"]},
            )
            placed.update(((site, int(seq)), int(row_id)) for row_id, seq in found)
        return [placed[row["site"], row["seq"]] for row in rows]

    def existing(self, table: str, column: str, values: Sequence[Any]) -> set[Any]:
        """Return which of ``values`` are already in ``table.column``."""
        if not values:
            return set()
        statement = _existing(table, column)
        found: set[Any] = set()
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            found.update(r[0] for r in self.connection.execute(statement, {"values": chunk}))
        return found


@dataclass(frozen=True, slots=True)
class _TableStatements:
    insert: Insert
    head: Select[Any]
    placed: Select[Any]


# The writer runs the same few statements for every batch. Built once, they keep SQLAlchemy's
# cache key and compiled form; built anew each time, building them cost more than running them.
@cache
def _statements(table: str) -> _TableStatements:
    target = metadata.tables[table]
    columns = target.c
    return _TableStatements(
        insert=target.insert(),
        head=select(columns.seq, columns.hash)
        .where(columns.site == bindparam("site"), columns.seq.is_not(None))
        .order_by(columns.seq.desc())
        .limit(1),
        placed=select(columns.id, columns.seq).where(
            columns.site == bindparam("site"),
            columns.seq >= bindparam("first"),
            columns.seq <= bindparam("last"),
        ),
    )


@cache
def _existing(table: str, column: str) -> Select[Any]:
    target = metadata.tables[table].c[column]
    return select(target).where(target.in_(bindparam("values", expanding=True)))


def _same_columns(rows: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split rows, in order, into runs that name the same columns (one executemany each)."""
    run: list[dict[str, Any]] = []
    columns: Any = None
    for row in rows:
        keys = row.keys()
        if run and keys != columns:
            yield run
            run = []
        columns = keys
        run.append(row)
    if run:
        yield run


class LedgerDatabase:
    """The ledger over SQLite (embedded) or PostgreSQL: transactions, migrations, errors."""

    def __init__(self, engine: Engine, *, site: str, read_only: bool = False) -> None:
        self._engine = engine
        self.site = site
        self.read_only = read_only

    @classmethod
    def open(
        cls,
        url: str,
        *,
        site: str = "",
        read_only: bool = False,
        busy_timeout: float = 5.0,
    ) -> LedgerDatabase:
        """Open a ledger at ``url`` without connecting yet (the database may still be down).

        ``busy_timeout`` (seconds) bounds how long a statement waits for SQLite's lock or for a
        PostgreSQL connection before the ledger reports itself unavailable.

        Raises:
            LedgerError: the URL is not usable (not SQLite or PostgreSQL, no such directory).
        """
        parsed = sync_url(url)
        return cls(_engine(parsed, busy_timeout, read_only), site=site, read_only=read_only)

    @property
    def backend(self) -> str:
        """The database backend's name: "sqlite" or "postgresql"."""
        return str(self._engine.dialect.name)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for the writer's own connection)."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> LedgerDatabase:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[LedgerSession]:
        """Open a write transaction; it commits when the block ends without an error."""
        if self.read_only:
            raise LedgerError("the ledger is open read-only")
        with translated(), self._engine.connect() as plain:
            connection = plain.execution_options(**{_WRITE: True})
            with connection.begin():
                yield LedgerSession(connection, self.site, writable=True)

    @contextmanager
    def read(self) -> Iterator[LedgerSession]:
        """Open a read-only transaction."""
        with translated(), self._engine.connect() as connection, connection.begin():
            yield LedgerSession(connection, self.site, writable=False)

    # -- schema ------------------------------------------------------------------------------

    def migrate(self, *, grant_to: str = "") -> None:
        """Bring the schema up to the newest migration shipped with pbxguard.

        On PostgreSQL, ``grant_to`` names a role (the daemon's) that gets SELECT and INSERT on
        every ledger table and nothing more: it can append, never alter or disable triggers.
        """
        if self.read_only:
            raise LedgerError("a read-only ledger cannot be migrated")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))

        def upgrade(connection: Connection) -> None:
            config.attributes["connection"] = connection
            config.attributes["site"] = self.site
            command.upgrade(config, "head")

        with translated(), self._engine.connect() as plain:
            sqlite = self.backend == "sqlite"
            if sqlite:
                # SQLite changes a table by rebuilding it; foreign keys must not object while the
                # rows move (they are checked again below, before the transaction commits).
                plain.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                connection = plain.execution_options(**{_WRITE: True})
                with connection.begin():
                    upgrade(connection)
                    if sqlite:
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
                        if broken is not None:
                            raise LedgerIntegrityError(
                                f"the migration left a dangling reference: {tuple(broken)}"
                            )
                    if grant_to and self.backend == "postgresql":
                        _grant_append_only(connection, grant_to)
            finally:
                if sqlite:
                    plain.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
        _log.info("ledger_migrated", backend=self.backend)

    def revision(self) -> str | None:
        """Return the schema's current migration, or None for an empty database."""
        with translated(), self._engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head_revision() -> str:
        """Return the newest migration shipped with pbxguard."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None
        return head

    def require_current(self) -> None:
        """Raise unless the schema is at the newest migration.

        Raises:
            LedgerError: the schema is older (or newer) than this pbxguard: says what to run.
        """
        current, wanted = self.revision(), self.head_revision()
        if current is None:
            raise LedgerError(
                "账本尚未建立 — the database holds no ledger yet: run `pbxguard ledger migrate` "
                "as the database owner (or start `pbxguard run`, which creates it)"
            )
        if current != wanted:
            raise LedgerError(
                f"账本结构需要升级 — the ledger schema is at {current}, this pbxguard "
                f"needs {wanted}: run `pbxguard ledger migrate` as the database owner"
            )

    def counts(self) -> Mapping[str, int]:
        """Return how many rows each table holds (for health and tests)."""
        with self.read() as session:
            return {
                name: int(session.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in metadata.tables.items()
            }


def _grant_append_only(connection: Connection, role: str) -> None:
    quoted = connection.dialect.identifier_preparer.quote(role)
    connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    connection.execute(text(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {quoted}"))
    connection.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}"))
    connection.execute(
        text(f"REVOKE UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM {quoted}")
    )


def _engine(url: URL, timeout: float, read_only: bool) -> Engine:
    # Errors end up in logs: hide_parameters keeps personal data and code hashes out of them.
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        if not path.parent.is_dir():
            raise LedgerError(f"the directory of the SQLite ledger {path} does not exist")
        if read_only:
            connect_url = url.set(database=f"file:{path}?mode=ro", query={"uri": "true"})
        else:
            connect_url = url
        engine = create_engine(
            connect_url,
            connect_args={"timeout": timeout, "check_same_thread": False},
            hide_parameters=True,
        )
        _sqlite_transactions(engine, read_only)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=timeout,
        hide_parameters=True,
        connect_args={"connect_timeout": max(1, round(timeout))},
    )


def _sqlite_transactions(engine: Engine, read_only: bool) -> None:
    """Let SQLite transactions begin where SQLAlchemy says, taking the write lock for writes."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is off; the "begin" hook below emits ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
            # Every commit reaches the disk before the journal in front of the ledger lets go
            # of its entries (the writer batches commits, so this costs one sync per batch).
            cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
