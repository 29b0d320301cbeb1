"""Where a database may be: links, other users' files, FIFOs, devices, folder modes,
read-only databases, reading commands that must not create one, URLs and lock waits.

Tests run as root here; the attacker is `nobody` (uid 65534), by `os.chown` of the files
it plants and by `setpriv` for the commands it runs.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from conftest import Cli, Target
from memsnap.errors import DatabaseError, NotFoundError, UsageError
from memsnap.store.database import open_database, resolve_url

NOBODY = 65534


def memsnap(
    db: str, *args: str, user: list[str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "memsnap", "--db", db, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A world-writable sticky folder, as /tmp is."""
    folder = Path(tempfile.mkdtemp(prefix="memsnap-shared-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def as_nobody() -> list[str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to act as another user")
    user = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    probe = subprocess.run(
        [*user, sys.executable, "-c", "import memsnap.cli"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this Python: {probe.stderr.strip()[-200:]}")
    return user


def _root_only(tmp_path: Path) -> Path:
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    return private


# --- item 9.2: the path cannot be hijacked ---------------------------------------------


@pytest.mark.live
def test_a_planted_dangling_link_is_never_followed(
    shared_folder: Path, tmp_path: Path, target: Target
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the attack is on root's database")
    aim = _root_only(tmp_path) / "created-by-root.db"
    link = shared_folder / "memsnap.db"
    link.symlink_to(aim)
    os.lchown(link, NOBODY, NOBODY)
    out = Cli(str(link))("record", str(target.pid))
    assert out.exit_code == 1 and "symbolic link" in out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert not aim.exists() and link.is_symlink()


def test_a_link_to_an_existing_database_is_refused_too(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    open_database(str(real)).close()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    with pytest.raises(DatabaseError, match="symbolic link"):
        open_database(str(link), create=False)


@pytest.mark.live
def test_a_file_someone_else_created_is_not_adopted(shared_folder: Path, target: Target) -> None:
    if os.geteuid() != 0:
        pytest.skip("the attack is on root's database")
    planted = shared_folder / "memsnap.db"
    planted.touch()
    os.chown(planted, NOBODY, NOBODY)
    planted.chmod(0o666)
    out = Cli(str(planted))("record", str(target.pid))
    assert out.exit_code == 1 and f"owned by uid {NOBODY}" in out.stderr
    assert planted.read_bytes() == b""  # never adopted as root's database


def test_a_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memsnap.db"
    open_database(str(path)).close()
    path.chmod(0o666)
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="others may write it"):
        open_database(str(path))
    assert path.read_bytes() == before


def test_a_planted_wal_beside_the_database_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to plant another user's file")
    path = tmp_path / "memsnap.db"
    open_database(str(path)).close()
    wal = Path(f"{path}-wal")
    wal.write_bytes(b"frames someone else wrote")
    os.chown(wal, NOBODY, NOBODY)
    with pytest.raises(DatabaseError, match=f"-wal: is owned by uid {NOBODY}"):
        open_database(str(path))


def test_folders_are_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "memsnap.db"
    old = os.umask(0)
    try:
        open_database(str(path)).close()
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.live
def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "memsnap.db"
    os.mkfifo(fifo)
    for args in (["list"], ["record", str(os.getpid())]):
        out = memsnap(str(fifo), *args, timeout=60)  # a regression hangs: the timeout fails it
        assert out.returncode == 1 and "is a FIFO" in out.stderr, out.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.live
def test_dev_null_is_refused_before_sqlite_touches_it() -> None:
    journal = Path("/dev/null-journal")
    if journal.exists():
        if os.geteuid() != 0:
            pytest.skip("a /dev/null-journal from an earlier memsnap is in the way")
        journal.unlink()
    for args in (["list"], ["record", str(os.getpid())]):
        out = memsnap("/dev/null", *args)
        assert out.returncode == 1 and "is a device" in out.stderr, out.stderr
    assert not journal.exists()


# --- item 9.5: databases the caller may only read ----------------------------------------


@pytest.fixture
def readable_by_all() -> Iterator[Path]:
    """Where root's database goes: a root-owned folder everyone may enter, not write."""
    folder = Path(tempfile.mkdtemp(prefix="memsnap-root-"))
    folder.chmod(0o755)
    yield folder / "memsnap.db"
    shutil.rmtree(folder)


@pytest.mark.live
def test_a_database_the_user_may_only_read_can_be_read(
    readable_by_all: Path, as_nobody: list[str], target: Target
) -> None:
    path = readable_by_all
    done = Cli(str(path))("record", str(target.pid), "--label", "by root")
    assert done.exit_code == 0, done.stderr
    path.chmod(0o644)
    before = path.read_bytes()
    listed = memsnap(str(path), "list", "--format", "json", user=as_nobody)
    assert listed.returncode == 0, listed.stderr
    assert [s["label"] for s in json.loads(listed.stdout)["snapshots"]] == ["by root"]
    shown = memsnap(str(path), "show", "1", "--format", "json", user=as_nobody)
    assert shown.returncode == 0 and json.loads(shown.stdout)["regions"]
    recorded = memsnap(str(path), "record", "--all", user=as_nobody)
    assert recorded.returncode == 1
    assert "read-only to you" in recorded.stderr and len(recorded.stderr.splitlines()) == 1
    pruned = memsnap(str(path), "prune", "--keep-last", "1", user=as_nobody)
    assert pruned.returncode == 1 and f"{path}: is read-only to you" in pruned.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["memsnap.db"]


@pytest.mark.live
def test_a_read_only_database_needing_an_upgrade_says_so(
    readable_by_all: Path, as_nobody: list[str]
) -> None:
    from test_identify import legacy_database

    path = readable_by_all
    legacy_database(str(path), "0002_snapshot_digest")
    path.chmod(0o644)
    before = path.read_bytes()
    out = memsnap(str(path), "list", user=as_nobody)
    assert out.returncode == 1 and "read-only to you" in out.stderr
    assert "needs an upgrade" in out.stderr and "Traceback" not in out.stderr
    assert path.read_bytes() == before


# --- item 10.9: reading commands never create a database ---------------------------------


@pytest.mark.parametrize(
    "args", [["list"], ["show", "1"], ["diff", "1", "2"], ["replay", "--pid", "1"]]
)
def test_reading_a_missing_database_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "no" / "such" / "folder" / "memsnap.db"
    out = Cli(str(path))(*args)
    assert out.exit_code == 1
    assert out.stderr.strip() == f"memsnap: nothing recorded in {path} yet"
    assert not (tmp_path / "no").exists()


def test_a_name_that_is_not_a_url_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = Cli("notaurl:foo")("list")
    assert out.exit_code == 1 and "nothing recorded in" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_db_option_is_a_usage_error(tmp_path: Path) -> None:
    out = Cli("")("list")
    assert out.exit_code == 2 and "--db is empty" in out.stderr
    with pytest.raises(UsageError):
        resolve_url("")


def test_reading_an_empty_postgres_schema_creates_no_table(pg_url: str) -> None:
    with pytest.raises(NotFoundError, match="nothing recorded in"):
        open_database(pg_url, create=False)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []
    engine.dispose()


@pytest.mark.live
def test_record_still_creates_the_database(tmp_path: Path, target: Target) -> None:
    path = tmp_path / "new" / "memsnap.db"
    assert Cli(str(path))("record", str(target.pid)).exit_code == 0
    assert Cli(str(path))("list").exit_code == 0


# --- URLs ------------------------------------------------------------------------------


def test_postgres_urls_mean_psycopg() -> None:
    assert resolve_url("postgres://u:p@h:5/d") == "postgresql+psycopg://u:p@h:5/d"
    assert resolve_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert resolve_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"


@pytest.mark.live
def test_a_postgres_url_records_and_lists(pg_url: str, target: Target) -> None:
    short = pg_url.replace("postgresql+psycopg://", "postgres://", 1)
    cli = Cli(short)
    assert cli("record", str(target.pid)).exit_code == 0
    listed = cli("list", "--format", "json")
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)["snapshots"]) == 1


def test_psycopg_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(DatabaseError, match=r"pip install 'memsnap\[postgres\]'"):
        open_database("postgres://u@127.0.0.1:1/x")


# --- waiting for a lock ------------------------------------------------------------------


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_writer_kept_waiting_says_for_what(tmp_path: Path) -> None:
    path = tmp_path / "memsnap.db"
    said: list[str] = []
    db = open_database(str(path), notify=said.append)
    try:
        db.write(lambda conn: conn.execute(text("SELECT 1")))
        assert said == []  # not locked: nothing to say
        holder = _hold_write_lock(path)
        wrote = threading.Event()

        def write() -> None:
            db.write(lambda conn: conn.execute(text("UPDATE snapshots SET label = 'x'")))
            wrote.set()

        writer = threading.Thread(target=write)
        writer.start()
        while not said and writer.is_alive():
            writer.join(0.05)
        assert not wrote.is_set()
        holder.execute("COMMIT")
        holder.close()
        writer.join()
        assert wrote.is_set()
        assert said == [f"waiting for another process writing {path} (up to 30 s)..."]
    finally:
        db.close()


@pytest.mark.live
def test_on_a_terminal_record_says_it_waits_for_the_lock(tmp_path: Path, target: Target) -> None:
    path = tmp_path / "memsnap.db"
    open_database(str(path)).close()
    holder = _hold_write_lock(path)
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memsnap", "--db", str(path), "record", str(target.pid)],
        stdout=subprocess.PIPE,
        stderr=side,
        text=True,
    )
    os.close(side)
    seen = b""
    try:
        while b"waiting" not in seen and proc.poll() is None:
            ready, _, _ = select.select([main], [], [], 1)
            if ready:
                seen += os.read(main, 1024)
    finally:
        holder.execute("COMMIT")
        holder.close()
    out, _ = proc.communicate(timeout=60)
    os.close(main)
    assert b"memsnap: waiting for another process writing" in seen
    assert proc.returncode == 0 and out.startswith("snapshot 1:")
