"""The database: migrations, what is ours and what is not, 64-bit addresses, file modes."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select

from memsnap.errors import DatabaseError
from memsnap.store.database import (
    SCHEMA_HEAD,
    migrations_dir,
    open_database,
    resolve_url,
    stored_revision,
    upgrade,
)
from memsnap.store.identify import VERSION_TABLE
from memsnap.store.schema import metadata, regions


def test_schema_head_constant_is_alembic_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert heads == [SCHEMA_HEAD]  # one head, and the fast path knows it


def test_migrated_schema_matches_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = open_database(db_url)
    try:
        with db.engine.connect() as conn:
            assert stored_revision(conn) == SCHEMA_HEAD
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}), metadata
            )
        assert diff == []
    finally:
        db.close()


def test_upgrade_and_downgrade_round_trip(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    db = open_database(db_url)
    try:
        with db.engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(migrations_dir()))
            cfg.attributes["connection"] = conn
            cfg.attributes["version_table"] = VERSION_TABLE
            command.downgrade(cfg, "base")
        with db.engine.connect() as conn:
            left = set(inspect(conn).get_table_names()) - {VERSION_TABLE}
        assert left == set()
        with db.engine.begin() as conn:
            upgrade(conn)
        with db.engine.connect() as conn:
            assert stored_revision(conn) == SCHEMA_HEAD
            assert {"regions", "snapshots", "processes", "paths"} <= set(
                inspect(conn).get_table_names()
            )
    finally:
        db.close()


def test_addresses_round_trip_and_sort_across_the_whole_range(db: object) -> None:
    from memsnap.model import ProcessIdentity
    from memsnap.store.database import Database
    from memsnap.store.writer import process_id

    assert isinstance(db, Database)
    values = [
        0,
        1,
        0x7FFFFFFFFFFF,
        2**63 - 1,
        2**63,
        2**63 + 1,
        0xFFFFFFFFFF600000,
        0xFFFFFFFFFFFFF000,
        2**64 - 1,
    ]
    with db.writing() as conn:
        pid_row, _ = process_id(conn, ProcessIdentity("h", None, 1, None), "x", (), None)
        conn.execute(
            insert(regions),
            [
                {
                    "process_id": pid_row,
                    "first_seq": 1,
                    "last_seq": None,
                    "start_addr": v,
                    "end_addr": v,
                    "perms": "r--p",
                    "offset": v,
                    "dev": "00:00",
                    "inode": v,
                    "path_id": None,
                    "deleted": False,
                    "kind": "anon",
                }
                for v in reversed(values)
            ],
        )
    with db.reading() as conn:
        rows = conn.execute(
            select(regions.c.start_addr, regions.c.offset, regions.c.inode).order_by(
                regions.c.start_addr
            )
        ).all()
        above = (
            conn.execute(
                select(regions.c.start_addr)
                .where(regions.c.start_addr > 2**63)
                .order_by(regions.c.start_addr)
            )
            .scalars()
            .all()
        )
    assert [r.start_addr for r in rows] == values
    assert [r.offset for r in rows] == values and [r.inode for r in rows] == values
    assert above == [v for v in values if v > 2**63]


def test_new_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "memsnap.db"
    open_database(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_default_location_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMSNAP_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_url(None) == f"sqlite:///{tmp_path}/xdg/memsnap/memsnap.db"
    monkeypatch.setenv("MEMSNAP_DB", str(tmp_path / "env.db"))
    assert resolve_url(None) == f"sqlite:///{tmp_path}/env.db"
    assert resolve_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my precious notes\n" * 100)
    before = _bytes(path)
    with pytest.raises(DatabaseError, match="not a memsnap database"):
        open_database(str(path))
    assert _bytes(path) == before


def test_another_programs_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = _bytes(path)
    with pytest.raises(DatabaseError, match="customers"):
        open_database(str(path))
    assert _bytes(path) == before
    assert not Path(str(path) + "-wal").exists()


def test_database_from_a_newer_memsnap_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    open_database(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE memsnap_version SET version_num = '9999_from_the_future'")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = _bytes(path)
    with pytest.raises(DatabaseError, match="newer memsnap"):
        open_database(str(path))
    assert _bytes(path) == before


def test_unwritable_location_is_a_plain_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "file").write_text("x")
    with pytest.raises(DatabaseError, match="cannot create"):
        open_database(str(folder / "file" / "memsnap.db"))


def test_postgres_url_without_server_is_a_plain_error() -> None:
    with pytest.raises(DatabaseError, match="cannot open database"):
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = open_database(str(path))
    with db.reading() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    db.close()


def test_migrated_regions_table_is_the_declared_region(db_url: str) -> None:
    """The migrated `regions` table has one column per field `model.Region` declares,
    named, typed and nullable as declared, and nothing else but its bookkeeping."""
    from memsnap.model import REGION_FIELDS

    kinds = {"u64": "BIGINT", "bigint": "BIGINT", "bool": "BOOLEAN", "text": "TEXT"}
    db = open_database(db_url)
    try:
        with db.engine.connect() as conn:
            found = {c["name"]: c for c in inspect(conn).get_columns("regions")}
    finally:
        db.close()
    assert set(found) == {"id", "process_id", "first_seq", "last_seq"} | {
        f.column for f in REGION_FIELDS
    }
    for f in REGION_FIELDS:
        column = found[f.column]
        assert column["nullable"] == f.nullable, f.name
        shown = str(column["type"]).upper()
        if f.spec.sql == "string":
            assert (
                shown.startswith("VARCHAR")
                and getattr(column["type"], "length", None) == f.spec.length
            )
        elif f.spec.sql == "path":
            assert "INT" in shown, f.name
        else:
            assert shown == kinds[f.spec.sql], (f.name, shown)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql+pymysql://u@127.0.0.1/x", "SQLite or PostgreSQL, not mysql"),
        ("postgresql+nosuchdriver://u@127.0.0.1/x", "cannot use database"),
        ("not a url://", "cannot use database"),
    ],
)
def test_unusable_urls_are_plain_errors(url: str, needle: str) -> None:
    with pytest.raises(DatabaseError, match=needle):
        open_database(url)


def test_write_runs_again_after_a_postgres_deadlock(tmp_path: Path) -> None:
    from sqlalchemy.exc import OperationalError

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    db = open_database(str(tmp_path / "retry.db"))
    calls: list[int] = []

    def deadlocks_once(_conn: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, PgError("40P01"))
        return "done"

    def always_broken(_conn: object) -> str:
        raise OperationalError("INSERT", {}, PgError("53100"))  # disk full: not retried

    try:
        assert db.write(deadlocks_once) == "done" and len(calls) == 2
        with pytest.raises(OperationalError):
            db.write(always_broken)
    finally:
        db.close()
