"""Opening a memsnap database: where it is, whether it is ours, and bringing it to head.

The order matters because a failure must leave the file as it was:

1. Resolve the target (`--db`, `MEMSNAP_DB`, or the XDG default) to a URL.
2. For a SQLite file, look before touching: a file that is not SQLite, or another
   program's SQLite database, is refused after a read-only look (connecting normally
   would already switch its journal to WAL). A new file is created 0600 in a folder
   created 0700: maps reveal paths and layout.
3. Compare the stored Alembic revision with `SCHEMA_HEAD`. Equal: done, and Alembic is
   never imported (it costs start-up time). Otherwise Alembic runs the pending
   migrations in one transaction on the connection in hand; a revision it does not know
   means a newer memsnap wrote the database, which is refused untouched.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from memsnap.errors import DatabaseError
from memsnap.store.schema import metadata

# The newest migration in migrations/versions; a test checks it against Alembic's head.
SCHEMA_HEAD = "0002_snapshot_digest"
OUR_TABLES = frozenset(metadata.tables) | {"alembic_version"}
# Tables SQLite keeps for itself in any database.
_SQLITE_OWN = frozenset({"sqlite_sequence"})
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 30
_RETRYABLE = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure
_WRITE_ATTEMPTS = 3
T = TypeVar("T")
_MIGRATION_LOCK = 0x6D656D736E6170  # "memsnap": the PostgreSQL advisory lock for upgrades


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "memsnap" / "memsnap.db"


def resolve_url(target: str | None) -> str:
    """A SQLAlchemy URL for `--db`/`MEMSNAP_DB`: a URL as given, a path as SQLite."""
    target = target or os.environ.get("MEMSNAP_DB") or str(default_path())
    if "://" in target:
        return target
    return "sqlite:///" + str(Path(target).expanduser().absolute())


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL, None for in-memory databases and other backends."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"cannot use database {url}: not a path or a SQLAlchemy URL") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def migrations_dir() -> Path:
    """The Alembic scripts: inside the installed package, or at the repository top."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DatabaseError("memsnap is installed without its migrations folder")


@dataclass
class Database:
    """An open, migrated memsnap database."""

    engine: Engine
    url: str

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE on SQLite) so two
        writers queue on the busy timeout instead of failing on a lock upgrade."""
        conn = self.engine.connect().execution_options(memsnap_immediate=True)
        try:
            with conn.begin():
                yield conn
        finally:
            conn.close()

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one write transaction. PostgreSQL may abort one of two
        transactions that wait on each other (deadlock, serialisation failure); then
        nothing of it was written, and it is simply run again."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self.writing() as conn:
                    return work(conn)
            except OperationalError as exc:
                code = getattr(getattr(exc, "orig", None), "sqlstate", None)
                if code not in _RETRYABLE or attempt == _WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.engine.dispose()


def _prepare_sqlite_file(path: Path) -> None:
    """Refuse what is not ours before any write; create a new file 0600."""
    if path.is_dir():
        raise DatabaseError(f"{path}: is a folder, not a database file")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise DatabaseError(f"{path}: cannot read: {exc.strerror}") from None
        if head and head != SQLITE_MAGIC:
            raise DatabaseError(f"{path}: not a memsnap database (not SQLite); left untouched")
        if head:
            _refuse_foreign_sqlite(path)
        return
    folder = path.parent
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot create the database: {exc.strerror}") from None


def _refuse_foreign_sqlite(path: Path) -> None:
    """A read-only look at an existing SQLite file: tables of another program -> refuse."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(
            f"{path}: not a usable SQLite database ({exc}); left untouched"
        ) from None
    _check_tables(names, str(path))


def _check_tables(names: set[str], where: str) -> None:
    """Refuse a database holding tables of another program (and none of Alembic's,
    which a newer memsnap might have added to)."""
    others = names - OUR_TABLES - _SQLITE_OWN
    if others and "alembic_version" not in names:
        raise DatabaseError(
            f"{where}: not a memsnap database (it holds other tables: "
            f"{', '.join(sorted(others)[:5])}); left untouched"
        )


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin:
        # that makes DDL transactional (a failed migration rolls back whole) and lets
        # writers say BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("memsnap_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def stored_revision(conn: Connection) -> str | None:
    names = set(inspect(conn).get_table_names())
    _check_tables(names, "database")
    if "alembic_version" not in names:
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def upgrade(conn: Connection, revision: str = "head", script_location: Path | None = None) -> None:
    """Run the pending migrations on `conn`, inside the caller's transaction."""
    from alembic import command

    cfg = _alembic_config(script_location)
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _alembic_config(script_location: Path | None) -> Any:
    """Alembic's configuration for memsnap's scripts (Alembic is imported only here,
    when a migration is due)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location or migrations_dir()))
    return cfg


def _scripts(script_location: Path | None) -> Any:
    """Alembic's view of the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(script_location))


def known_revisions(script_location: Path | None = None) -> set[str]:
    return {rev.revision for rev in _scripts(script_location).walk_revisions()}


def script_head(script_location: Path) -> str:
    head = _scripts(script_location).get_current_head()
    if head is None:
        raise DatabaseError(f"{script_location}: holds no migrations")
    return str(head)


SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def create_db_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            # The hot paths use SQLite's and PostgreSQL's own SQL (ON CONFLICT, quoting).
            raise DatabaseError(
                f"cannot use database {safe_url(url)}: memsnap stores into SQLite or "
                f"PostgreSQL, not {backend}"
            )
        if backend == "sqlite":
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
            _sqlite_events(engine)
        else:
            engine = create_engine(url, pool_pre_ping=False)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"cannot use database {safe_url(url)}: {exc}") from None
    return engine


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for an error message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_database(target: str | None = None, script_location: Path | None = None) -> Database:
    """Open (creating and migrating as needed) the database `target` names."""
    url = resolve_url(target)
    path = sqlite_file(url)
    if path is not None:
        _prepare_sqlite_file(path)
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            current = stored_revision(conn)
            conn.rollback()
        head = SCHEMA_HEAD if script_location is None else script_head(script_location)
        if current != head:
            _migrate(engine, current, head, script_location)
    except DatabaseError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {safe_url(url)}: {_reason(exc)}") from None
    return Database(engine=engine, url=url)


def _migrate(engine: Engine, current: str | None, head: str, script_location: Path | None) -> None:
    if current is not None and current not in known_revisions(script_location):
        raise DatabaseError(
            f"the database is at schema revision {current}, which this memsnap does not "
            "know: it was written by a newer memsnap; upgrade memsnap (left untouched)"
        )
    conn = engine.connect().execution_options(memsnap_immediate=True)
    try:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # Two memsnaps opening a new database at once: one migrates, one waits.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            # Look again inside the write lock: another memsnap may have migrated it.
            if stored_revision(conn) != head:
                upgrade(conn, script_location=script_location)
    except DatabaseError:
        raise
    except Exception as exc:  # a migration script failing in any way at all
        reason = _reason(exc) if isinstance(exc, SQLAlchemyError) else f"{exc}"
        raise DatabaseError(
            f"upgrading the database schema to {head} failed ({type(exc).__name__}: "
            f"{reason}); the database was left as it was"
        ) from None
    finally:
        conn.close()


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text_ = str(orig) if orig is not None else str(exc)
    if isinstance(exc, OperationalError) and "unable to open" in text_:
        return "unable to open the database file"
    return text_.strip().splitlines()[0] if text_.strip() else type(exc).__name__
