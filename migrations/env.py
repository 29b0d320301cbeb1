"""Alembic environment for memsnap: runs on the connection memsnap hands it.

memsnap opens the database itself and passes the connection in
`config.attributes["connection"]`, so migrations share its transaction: a migration that
fails midway rolls back whole (SQLite DDL is transactional once memsnap, not the sqlite3
module, begins transactions). `alembic` on the command line works too, from the
repository's alembic.ini with `-x url=...` or MEMSNAP_DB.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from memsnap.store.identify import VERSION_TABLE
from memsnap.store.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # memsnap's own version table, never another Alembic application's
        # `alembic_version` (a test builds old databases with that one).
        version_table=config.attributes.get("version_table", VERSION_TABLE),
        target_metadata=target_metadata,
        render_as_batch=True,
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from memsnap.store.database import create_db_engine, resolve_url

    url = context.get_x_argument(as_dictionary=True).get("url")
    engine = create_db_engine(resolve_url(url))
    with engine.connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("memsnap migrations run online only")
run_migrations_online()
