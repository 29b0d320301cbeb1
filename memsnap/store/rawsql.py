"""Hand-written SQL for the hot paths: 60,000 region rows read or written at once.

SQLAlchemy's per-row result and parameter processing costs more than SQLite's own work
at that size, so these statements go straight to the driver, in the database's own
representation (U64 columns as the stored, shifted BIGINTs). Names are quoted by the
dialect (`offset` is reserved in PostgreSQL); values are always bound parameters, except
integers memsnap itself produced.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection


def placeholder(conn: Connection) -> str:
    """The driver's positional parameter marker: `?` for SQLite, `%s` for psycopg."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def column_list(conn: Connection, names: Sequence[str], table: str | None = None) -> str:
    """Column names for hand-written SQL, quoted where the dialect needs it."""
    quote = conn.dialect.identifier_preparer.quote
    prefix = f"{table}." if table else ""
    return ", ".join(prefix + quote(n) for n in names)
