"""Alembic environment for the fine ledger.

`LedgerDatabase.migrate()` runs the migrations on its own connection (passed in
``config.attributes["connection"]``, with the site's name in ``config.attributes["site"]``), so
no alembic.ini is needed. The alembic command line works too, with an ini file whose
``script_location`` points here and whose ``sqlalchemy.url`` names the ledger database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from pbxguard.adapters.ledger.schema import metadata
from pbxguard.errors import LedgerError

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise LedgerError("set sqlalchemy.url to the ledger database")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as own:
            _run(own)
    finally:
        engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
