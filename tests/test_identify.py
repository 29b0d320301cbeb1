"""Telling memsnap's databases from everything else: foreign databases are refused and
left byte for byte as they were; memsnap's older databases are upgraded, data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from conftest import Cli
from memsnap.errors import DatabaseError
from memsnap.store.database import (
    SCHEMA_HEAD,
    create_db_engine,
    open_database,
    resolve_url,
    upgrade,
)
from memsnap.store.dbfile import APPLICATION_ID
from memsnap.store.identify import VERSION_TABLE


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


def _assert_refused_untouched(path: Path, needle: str) -> None:
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(DatabaseError, match=needle) as info:
            open_database(str(path), create=create)
        assert "left untouched" in str(info.value)
    out = Cli(str(path))("record", "--from-file", "-", "--pid", "1", input=_MAPS)
    assert out.exit_code == 1 and "not a memsnap database" in out.stderr
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()


_MAPS = "00400000-00401000 r-xp 00000000 08:02 7 /bin/prog\n"


def test_a_foreign_file_with_an_alembic_version_table_is_not_changed(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _sqlite(
        path,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('ae1027a6acf')",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
    )
    _assert_refused_untouched(path, "Alembic application")


def test_a_foreign_file_with_a_table_named_like_memsnaps_is_not_changed(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _sqlite(path, "CREATE TABLE snapshots (id INTEGER PRIMARY KEY, photo BLOB)")
    _assert_refused_untouched(path, "other tables: snapshots")


def test_another_alembic_application_with_no_revision_yet_is_not_taken_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    _sqlite(
        path,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
        "CREATE TABLE users (id INTEGER PRIMARY KEY)",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY)",
    )
    _assert_refused_untouched(path, "Alembic application")


def test_an_empty_sqlite_file_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    _sqlite(path, "PRAGMA application_id = 1234", "CREATE TABLE t (x)", "DROP TABLE t")
    _assert_refused_untouched(path, "application_id 0x000004d2")


def _pg_state(url: str) -> tuple[list[str], list[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            rows = [tuple(r) for t in tables for r in conn.execute(text(f"SELECT * FROM {t}"))]
        return tables, rows
    finally:
        engine.dispose()


def test_postgres_schema_of_another_alembic_application_is_not_taken_over(pg_url: str) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) primary key)"))
        conn.execute(text("CREATE TABLE users (id integer primary key)"))
        conn.execute(text("CREATE TABLE orders (id integer primary key)"))
        conn.execute(text("INSERT INTO users VALUES (1)"))
    engine.dispose()
    before = _pg_state(pg_url)
    for create in (True, False):
        with pytest.raises(DatabaseError, match=r"Alembic application.*left untouched"):
            open_database(pg_url, create=create)
    assert _pg_state(pg_url) == before


def test_a_new_sqlite_database_is_marked_as_memsnaps(tmp_path: Path) -> None:
    path = tmp_path / "memsnap.db"
    open_database(str(path)).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert VERSION_TABLE in tables and "alembic_version" not in tables


def legacy_database(url: str, revision: str) -> None:
    """A database as memsnap at `revision` (0001 or 0002) left it: Alembic's default
    version table, no application_id, WAL, and two snapshots of one process with smaps
    sizes (region 2 gone by the second)."""
    path = Path(url) if "://" not in url else None
    if path is not None:
        path.touch(mode=0o600)
        _sqlite(path, "PRAGMA journal_mode = WAL")
    engine = create_db_engine(resolve_url(url))
    with engine.connect() as conn, conn.begin():
        upgrade(conn, revision, version_table="alembic_version")
        conn.execute(
            text(
                "INSERT INTO processes (id, host, boot_id, pid, start_ticks, exe, command, cmdline)"
                " VALUES (1, 'old-host', 'b', 99, 5, '/bin/old', 'old', '[]')"
            )
        )
        for seq in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO snapshots (id, process_id, seq, taken_at, label, source,"
                    " page_size, kernel, has_smaps, regions, size, rss, pss, swap) VALUES"
                    " (:s, 1, :s, '2026-01-02 03:04:05', :label, 'live', 4096, '6.1', true,"
                    " 1, -9223372036854775808, 0, 0, 0)"
                ),
                {"s": seq, "label": f"old {seq}"},
            )
        regions = [
            # first_seq, last_seq, kind, private_clean, private_dirty
            (1, None, "heap", 4096, 8192),
            (1, 1, "heap", 0, 65536),
            (1, None, "anon", None, None),
            (2, None, "anon", 4096, 0),
        ]
        for i, (first, last, kind, clean, dirty) in enumerate(regions):
            conn.execute(
                text(
                    "INSERT INTO regions (process_id, first_seq, last_seq, start_addr, end_addr,"
                    ' perms, "offset", dev, inode, deleted, kind, private_clean, private_dirty)'
                    " VALUES (1, :f, :l, :a, :a, 'rw-p', 0, '00:00', 0, false, :k, :c, :d)"
                ),
                {"f": first, "l": last, "a": i, "k": kind, "c": clean, "d": dirty},
            )
        for seq in (1, 2):
            for kind in ("heap", "anon"):
                conn.execute(
                    text(
                        "INSERT INTO snapshot_kinds (snapshot_id, kind, regions, size)"
                        " VALUES (:s, :k, 1, 0)"
                    ),
                    {"s": seq, "k": kind},
                )
    engine.dispose()
    if path is not None:
        _sqlite(path, "PRAGMA wal_checkpoint(TRUNCATE)")


@pytest.mark.parametrize("revision", ["0001_initial", "0002_snapshot_digest"])
def test_an_older_memsnap_database_is_upgraded_and_marked_keeping_its_data(
    db_url: str, revision: str
) -> None:
    legacy_database(db_url, revision)
    db = open_database(db_url)
    try:
        with db.reading() as conn:
            tables = set(inspect(conn).get_table_names())
            version = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
            labels = conn.execute(text("SELECT label FROM snapshots ORDER BY id")).scalars().all()
            uss = conn.execute(text("SELECT uss FROM snapshots ORDER BY id")).scalars().all()
            kinds = conn.execute(
                text("SELECT snapshot_id, kind, uss FROM snapshot_kinds ORDER BY snapshot_id, kind")
            ).all()
            app_id = (
                conn.exec_driver_sql("PRAGMA application_id").scalar()
                if conn.dialect.name == "sqlite"
                else APPLICATION_ID
            )
    finally:
        db.close()
    assert "alembic_version" not in tables and version == [(SCHEMA_HEAD,)]
    assert app_id == APPLICATION_ID
    assert labels == ["old 1", "old 2"]
    # Snapshot 1 holds regions 0-2, snapshot 2 regions 0, 2, 3; NULL sizes are skipped.
    assert [tuple(k) for k in kinds] == [
        (1, "anon", None),
        (1, "heap", 4096 + 8192 + 65536),
        (2, "anon", 4096),
        (2, "heap", 4096 + 8192),
    ]
    assert uss == [4096 + 8192 + 65536, 4096 + 4096 + 8192]
