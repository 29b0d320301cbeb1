"""Opening a memsnap database: where it is, whether it is ours, and bringing it to head.

The order matters because a failure must leave the file as it was:

1. Resolve the target (`--db`, `MEMSNAP_DB`, or the XDG default) to a URL; `postgres://`
   (as psql and hosting services write it) means PostgreSQL through psycopg.
2. For a SQLite file, `memsnap.store.dbfile` judges the path before SQLite touches it
   (no links, FIFOs or devices; owned by the caller or root; writable by no one else)
   and only `record` creates a missing one. A file another program marked as its own
   (application_id) is refused from its header; an unmarked one that is not empty is
   first looked at read-only, since connecting normally could already change it.
3. `memsnap.store.identify` tells memsnap's databases from everything else on the
   connection; only then is anything set (WAL journal) or migrated.
4. Compare the stored revision with `SCHEMA_HEAD`. Equal: done, and Alembic is never
   imported (it costs start-up time). Otherwise Alembic runs the pending migrations in
   one transaction on the connection in hand, which also marks the database as memsnap's;
   a revision it does not know means a newer memsnap wrote the database, refused
   untouched.

A SQLite file the caller may only read is opened read-only (without even `-shm` when no
writer is active), for reading commands only, and never migrated.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from memsnap.errors import DatabaseError, MemsnapError, NotFoundError, UsageError
from memsnap.store import dbfile
from memsnap.store.identify import (
    VERSION_TABLE,
    Identity,
    adopt_legacy,
    check_application_id,
    identify,
    mark,
)

# The newest migration in migrations/versions; a test checks it against Alembic's head.
SCHEMA_HEAD = "0006_compact"
SQLITE_MAGIC = dbfile.SQLITE_MAGIC
BUSY_TIMEOUT_S = 30
# How long a writer waits for the lock in silence before saying what it waits for.
_QUIET_WAIT_MS = 200
_RETRYABLE = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure
_WRITE_ATTEMPTS = 3
T = TypeVar("T")
_MIGRATION_LOCK = 0x6D656D736E6170  # "memsnap": the PostgreSQL advisory lock for upgrades

Notify = Callable[[str], None]


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "memsnap" / "memsnap.db"


def resolve_url(target: str | None) -> str:
    """A SQLAlchemy URL for `--db`/`MEMSNAP_DB`: a URL as given, a path as SQLite."""
    if target == "":
        raise UsageError("--db is empty: give a file path or a database URL")
    target = target or os.environ.get("MEMSNAP_DB") or str(default_path())
    if "://" in target:
        scheme, rest = target.split("://", 1)
        base, _, driver = scheme.partition("+")
        if base in ("postgres", "postgresql") and driver in ("", "psycopg"):
            # psql's and hosting services' spelling; memsnap speaks to PostgreSQL
            # through psycopg 3 only (SQLAlchemy's default would be psycopg2).
            return f"postgresql+psycopg://{rest}"
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


def _driver_error(exc: BaseException) -> bool:
    """An error a database driver raised itself (a raw cursor's fetch is not wrapped
    by SQLAlchemy): sqlite3's, or psycopg's when it is loaded."""
    if isinstance(exc, sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


def database_error(exc: Exception) -> DatabaseError:
    """memsnap's error for a database failure: its first line, in the database's words."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return DatabaseError(f"database error: {reason[0] if reason else type(exc).__name__}")


@contextmanager
def database_errors() -> Iterator[None]:
    """Every SQLAlchemy or driver error raised inside becomes a `DatabaseError`: the
    store's callers never see one. memsnap's own errors pass as they are."""
    try:
        yield
    except MemsnapError:
        raise
    except SQLAlchemyError as exc:
        raise database_error(exc) from exc
    except Exception as exc:
        if _driver_error(exc):
            raise database_error(exc) from exc
        raise


@dataclass
class Database:
    """An open, migrated memsnap database."""

    engine: Engine
    url: str
    read_only: bool = False

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE on SQLite) so two
        writers queue on the busy timeout instead of failing on a lock upgrade."""
        if self.read_only:
            where = sqlite_file(self.url) or safe_url(self.url)
            raise DatabaseError(f"{where}: is read-only to you; writing needs write access")
        conn = self.engine.connect().execution_options(memsnap_immediate=True)
        try:
            with conn.begin():
                yield conn
        except IntegrityError:
            # What this connection remembers of the database (the path ids of
            # `writer.intern_paths`) may name rows another process deleted since (a
            # prune): a foreign key then fails. Forget it; `write` runs the work again.
            for key in [k for k in conn.info if str(k).startswith("memsnap.")]:
                del conn.info[key]
            raise
        finally:
            conn.close()

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one write transaction. PostgreSQL may abort one of two
        transactions that wait on each other (deadlock, serialisation failure); then
        nothing of it was written, and it is simply run again. So is work that broke an
        integrity rule, once, with what the connection remembered forgotten (`writing`);
        a second time it is a real failure."""
        forgot = False
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self.writing() as conn:
                    return work(conn)
            except IntegrityError:
                if forgot or attempt == _WRITE_ATTEMPTS - 1:
                    raise
                forgot = True
            except OperationalError as exc:
                code = getattr(getattr(exc, "orig", None), "sqlstate", None)
                if code not in _RETRYABLE or attempt == _WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.engine.dispose()


def _locked(exc: OperationalError) -> bool:
    reason = str(getattr(exc, "orig", exc))
    return "locked" in reason or "busy" in reason


def _sqlite_events(engine: Engine, notify: Notify | None, where: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin:
        # that makes DDL transactional (a failed migration rolls back whole) and lets
        # writers say BEGIN IMMEDIATE. Nothing here writes: the journal mode is set
        # only once the database is known to be memsnap's.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("memsnap_immediate")
        if not immediate:
            conn.exec_driver_sql("BEGIN")
        elif notify is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            _begin_saying_why_it_waits(conn, notify, where)


def _begin_saying_why_it_waits(conn: Connection, notify: Notify, where: str) -> None:
    """BEGIN IMMEDIATE; if another writer holds the lock past a short while, say so
    once, then wait the rest of the busy timeout. An unlocked database takes the first
    attempt at once, whatever its timeout."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute(f"PRAGMA busy_timeout = {_QUIET_WAIT_MS}")
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    except OperationalError as exc:
        if not _locked(exc):
            raise
    finally:
        raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
    notify(f"waiting for another process writing {where} (up to {BUSY_TIMEOUT_S} s)...")
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def stored_revision(conn: Connection) -> str | None:
    """memsnap's schema revision in the database on `conn` (None: empty)."""
    return identify(conn, "database").revision


def upgrade(
    conn: Connection,
    revision: str = "head",
    script_location: Path | None = None,
    version_table: str = VERSION_TABLE,
) -> None:
    """Run the pending migrations on `conn`, inside the caller's transaction.
    (`version_table` other than memsnap's own is for tests that build old databases.)"""
    from alembic import command

    cfg = _alembic_config(script_location)
    cfg.attributes["connection"] = conn
    cfg.attributes["version_table"] = version_table
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


def create_db_engine(
    url: str, notify: Notify | None = None, read_only_uri: str | None = None
) -> Engine:
    """An engine for `url`; `read_only_uri` opens a SQLite file through that URI instead
    (read-only), `notify` is told when a writer waits for another's lock."""
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
            if read_only_uri is not None:
                uri = read_only_uri
                engine = create_engine(
                    url,
                    creator=lambda: sqlite3.connect(
                        uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
                    ),
                )
            else:
                engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
            _sqlite_events(engine, notify, parsed.database or url)
        else:
            engine = create_engine(url, pool_pre_ping=False)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        if "psycopg" in str(exc):
            raise DatabaseError(
                f"cannot use database {safe_url(url)}: PostgreSQL needs the psycopg driver "
                "(pip install 'memsnap[postgres]')"
            ) from None
        raise DatabaseError(f"cannot use database {safe_url(url)}: {exc}") from None
    return engine


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for an error message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _read_only_uri(path: Path, immutable: bool) -> str:
    """A SQLite URI opening `path` read-only. `immutable` also keeps SQLite from creating
    `-shm`/`-wal` beside it (in a folder the reader may not write, it could not; in a
    shared one they would be the reader's files); only right when no writer has frames
    pending in a `-wal`."""
    return f"file:{quote(str(path), safe='/')}?mode=ro" + ("&immutable=1" if immutable else "")


def _look_read_only(path: Path, look: dbfile.FileLook) -> None:
    """Refuse an unmarked, non-empty SQLite file that is not memsnap's, by a read-only
    look: connecting normally would already switch its journal mode."""
    engine = create_db_engine(
        f"sqlite:///{path}", read_only_uri=_read_only_uri(path, immutable=look.wal)
    )
    try:
        with engine.connect() as conn:
            identify(conn, str(path))
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"{path}: not a usable SQLite database ({_reason(exc)}); left untouched"
        ) from None
    finally:
        engine.dispose()


def open_database(
    target: str | None = None,
    script_location: Path | None = None,
    *,
    create: bool = True,
    notify: Notify | None = None,
    migrate: bool = True,
) -> Database:
    """Open the database `target` names, migrating it as needed. `create`: a missing
    database is created (only a command that records asks for that; a reading command
    on a missing or empty database is told nothing was recorded there yet). `notify` is
    told when a writer has to wait for another's lock. `migrate=False`: a database whose
    schema is not this memsnap's is refused, not upgraded (`push` never changes the
    database it reads from)."""
    url = resolve_url(target)
    path = sqlite_file(url)
    where = safe_url(url) if path is None else str(path)
    read_only_uri = None
    if path is not None:
        look = dbfile.look(path, create)
        check_application_id(look.application_id, where)
        if not look.empty and look.application_id == 0:
            _look_read_only(path, look)
        if not look.writable:
            if create:
                raise DatabaseError(
                    f"{path}: is read-only to you (owner uid {look.owner}, mode "
                    f"{look.mode:04o}); recording needs write access"
                )
            read_only_uri = _read_only_uri(path, immutable=not look.wal_file)
    engine = create_db_engine(url, notify=notify, read_only_uri=read_only_uri)
    try:
        with engine.connect() as conn:
            found = identify(conn, where)
            conn.rollback()
            if found.empty and not create:
                raise NotFoundError(f"nothing recorded in {where} yet")
            if conn.dialect.name == "sqlite" and read_only_uri is None and migrate:
                _use_wal(conn)
        head = SCHEMA_HEAD if script_location is None else script_head(script_location)
        if found.revision != head or found.legacy:
            if not migrate:
                raise DatabaseError(
                    f"{where}: its schema ({found.revision}) is older than this memsnap's "
                    f"({head}), and it is only read here: any other memsnap command "
                    "upgrades it (stop a watch an older memsnap runs on it first)"
                )
            if read_only_uri is not None:
                raise DatabaseError(
                    f"{where}: its schema ({found.revision}) needs an upgrade to {head}, and "
                    "it is read-only to you: open it once as its owner to upgrade it"
                )
            _migrate(engine, found, head, script_location, where)
    except (DatabaseError, NotFoundError):
        engine.dispose()
        raise
    except (SQLAlchemyError, sqlite3.Error) as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {where}: {_reason(exc)}") from None
    return Database(engine=engine, url=url, read_only=read_only_uri is not None)


def _use_wal(conn: Connection) -> None:
    """WAL journal (readers never wait for the writer), set once the database is known
    to be memsnap's or empty; it persists in the file, so usually nothing is written."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while raw.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            raw.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            # Two memsnaps switching one new file at once: SQLite answers "locked" at
            # once, without its busy handler (waiting could deadlock); try again.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _migrate(
    engine: Engine, found: Identity, head: str, script_location: Path | None, where: str
) -> None:
    if found.revision is not None and found.revision not in known_revisions(script_location):
        raise DatabaseError(
            f"the database is at schema revision {found.revision}, which this memsnap does "
            "not know: it was written by a newer memsnap; upgrade memsnap (left untouched)"
        )
    conn = engine.connect().execution_options(memsnap_immediate=True)
    try:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # Two memsnaps opening a new database at once: one migrates, one waits.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            # Look again inside the write lock: another memsnap may have migrated it.
            now = identify(conn, where)
            if now.revision != head or now.legacy:
                if now.legacy:
                    assert now.revision is not None
                    adopt_legacy(conn, now.revision)
                mark(conn)
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


def _reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    text_ = str(orig) if orig is not None else str(exc)
    if isinstance(exc, OperationalError) and "unable to open" in text_:
        return "unable to open the database file"
    return text_.strip().splitlines()[0] if text_.strip() else type(exc).__name__
