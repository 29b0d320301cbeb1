"""Whose database this is: memsnap's (and at which revision), empty, or someone else's.

memsnap's databases say so positively: SQLite files carry the application_id "MSNP" in
their header, and on both backends Alembic keeps memsnap's revision in a table of its
own, `memsnap_version` (never the `alembic_version` another Alembic application uses).
A database holding no tables is empty. Databases of memsnap before this scheme (an
`alembic_version` at one of its first two revisions, beside exactly its tables) are
memsnap's, to be upgraded. Everything else holding tables is foreign, and is refused
before a single byte of it changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text

from memsnap.errors import DatabaseError
from memsnap.store.dbfile import APPLICATION_ID

VERSION_TABLE = "memsnap_version"
# What memsnap wrote before it marked its databases: Alembic's default version table at
# one of these revisions, and these tables.
LEGACY_VERSION_TABLE = "alembic_version"
LEGACY_REVISIONS = frozenset({"0001_initial", "0002_snapshot_digest"})
LEGACY_TABLES = frozenset({"processes", "snapshots", "snapshot_kinds", "paths", "regions"})


@dataclass(frozen=True, slots=True)
class Identity:
    """A database memsnap may use."""

    revision: str | None  # memsnap's schema revision; None when empty or at base
    empty: bool = False  # holds no table at all
    legacy: bool = False  # written before memsnap marked its databases


def foreign(where: str, why: str) -> DatabaseError:
    return DatabaseError(f"{where}: not a memsnap database ({why}); left untouched")


def describe_application_id(value: int) -> str:
    raw = value.to_bytes(4, "big")
    shown = raw.decode("ascii") if all(32 < b < 127 for b in raw) else ""
    return f"0x{value:08x}" + (f" ({shown!r})" if shown else "")


def check_application_id(value: int, where: str) -> None:
    if value not in (0, APPLICATION_ID):
        raise foreign(
            where,
            f"another application's SQLite file: application_id {describe_application_id(value)}",
        )


def identify(conn: Connection, where: str) -> Identity:
    """Tell what `conn` holds, reading only; raise for anything that is not memsnap's."""
    sqlite = conn.dialect.name == "sqlite"
    app_id = 0
    if sqlite:
        app_id = int(conn.exec_driver_sql("PRAGMA application_id").scalar() or 0)
        check_application_id(app_id, where)
    names = {n for n in inspect(conn).get_table_names() if not n.startswith("sqlite_")}
    if VERSION_TABLE in names and (app_id == APPLICATION_ID or not sqlite):
        row = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
        return Identity(None if row is None else str(row[0]))
    if not names:
        return Identity(None, empty=True)
    if app_id == 0 and names == LEGACY_TABLES | {LEGACY_VERSION_TABLE}:
        rows = conn.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")).all()
        if len(rows) == 1 and rows[0][0] in LEGACY_REVISIONS:
            return Identity(str(rows[0][0]), legacy=True)
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    if LEGACY_VERSION_TABLE in names:
        raise foreign(where, f"another Alembic application's database, holding {shown}")
    raise foreign(where, f"it holds other tables: {shown}")


def adopt_legacy(conn: Connection, revision: str) -> None:
    """Move an old memsnap database's revision into memsnap's own version table, inside
    the caller's (migration) transaction. The table is the one Alembic would create."""
    conn.execute(
        text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:r)"), {"r": revision})
    conn.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))


def mark(conn: Connection) -> None:
    """Mark a SQLite file as memsnap's (inside the caller's transaction)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
