"""Faults and bad input: a plain message, the contract's exit code, and nothing recorded
lost or changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from conftest import Cli, Target
from fakeproc import FakeProc, FakeProcess, FakeProcTree, smaps_of
from memsnap.capture.procfs import PF_EXITING, Proc
from memsnap.errors import DatabaseError, ProcessGone
from memsnap.store.database import SCHEMA_HEAD, migrations_dir, open_database, upgrade

HOSTILE = [
    "'; DROP TABLE snapshots; --",
    '"quoted" and %s %(x)s %%',
    "semi;colon\nnew line",
    "\\012 next to\na newline",
    "trailing (deleted)",
    "ünïcödé ✓",
    "x" * 5000,
]


def memsnap(db: str, *args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "memsnap", "--db", db, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshots(cli: Cli) -> list[dict[str, Any]]:
    out = cli("list", "--format", "json")
    assert out.exit_code == 0, out.stderr
    return list(json.loads(out.stdout)["snapshots"])


def assert_complete(cli: Cli) -> None:
    """Every snapshot shows exactly the regions its totals count: none half-written."""
    for s in snapshots(cli):
        doc = json.loads(cli("show", str(s["id"]), "--format", "json").stdout)
        assert len(doc["regions"]) == s["totals"]["regions"] > 0


# --- concurrency --------------------------------------------------------------------


@pytest.mark.live
def test_four_writers_at_once_keep_all_forty(db_url: str, target_binary: Path) -> None:
    """Four `memsnap record` processes on one new database at once, each recording a
    process of its own and one they all share, ten snapshots each."""
    targets = [Target(target_binary) for _ in range(5)]
    shared = targets[4]
    try:
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "memsnap",
                    "--db",
                    db_url,
                    "record",
                    str(t.pid),
                    str(shared.pid),
                    "--every",
                    "0.05",
                    "--count",
                    "5",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for t in targets[:4]
        ]
        results = [w.communicate(timeout=300) for w in writers]
    finally:
        for t in targets:
            t.stop()
    for w, (out, err) in zip(writers, results, strict=True):
        assert w.returncode == 0, err
        assert len(out.splitlines()) == 10
    cli = Cli(db_url)
    kept = snapshots(cli)
    assert len(kept) == 40
    of_shared = [s for s in kept if s["pid"] == shared.pid]
    assert sorted(s["seq"] for s in of_shared) == list(range(1, 21))  # no seq taken twice
    assert_complete(cli)


# --- databases that are not ours -----------------------------------------------------


def _pg_state(url: str) -> tuple[list[str], list[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            rows = []
            for version in ("alembic_version", "memsnap_version"):
                if version in tables:
                    rows += [tuple(r) for r in conn.execute(text(f"SELECT * FROM {version}"))]
            if "customers" in tables:
                rows += [tuple(r) for r in conn.execute(text("SELECT * FROM customers"))]
        return tables, rows
    finally:
        engine.dispose()


def test_postgres_schema_of_another_program_is_refused(pg_url: str) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id integer primary key, name text)"))
        conn.execute(text("INSERT INTO customers VALUES (1, 'ada')"))
    engine.dispose()
    before = _pg_state(pg_url)
    with pytest.raises(DatabaseError, match="customers"):
        open_database(pg_url)
    assert _pg_state(pg_url) == before


def test_postgres_database_from_a_newer_memsnap_is_refused(pg_url: str) -> None:
    open_database(pg_url).close()
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE memsnap_version SET version_num = '9999_future'"))
    engine.dispose()
    before = _pg_state(pg_url)
    with pytest.raises(DatabaseError, match="newer memsnap"):
        open_database(pg_url)
    assert _pg_state(pg_url) == before


@pytest.mark.live
def test_cli_refuses_foreign_files_with_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40)
    before = path.read_bytes()
    out = memsnap(str(path), "list")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("memsnap: ") and len(out.stderr.splitlines()) == 1
    assert path.read_bytes() == before


# --- upgrades -----------------------------------------------------------------------


def _old_database(url: str) -> None:
    """A database as memsnap 0001 left it, with one snapshot in it."""
    from memsnap.store.database import create_db_engine, resolve_url, sqlite_file

    path = sqlite_file(resolve_url(url))
    if path is not None:
        path.touch(mode=0o600)
    engine = create_db_engine(resolve_url(url))
    with engine.connect() as conn, conn.begin():
        upgrade(conn, "0001_initial", version_table="alembic_version")  # as 0001 did
        conn.execute(
            text(
                "INSERT INTO processes (id, host, boot_id, pid, start_ticks, exe, command, cmdline)"
                " VALUES (1, 'old-host', 'b', 99, 5, '/bin/old', 'old', '[]')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO snapshots (id, process_id, seq, taken_at, label, source, page_size,"
                " kernel, has_smaps, regions, size) VALUES (1, 1, 1, '2026-01-02 03:04:05',"
                " 'from 0001', 'live', 4096, '6.1', false, 0, -9223372036854775808)"
            )
        )
    engine.dispose()


def test_older_database_upgrades_on_open_keeping_its_data(db_url: str) -> None:
    _old_database(db_url)
    db = open_database(db_url)
    try:
        with db.reading() as conn:
            version = conn.execute(text("SELECT version_num FROM memsnap_version")).scalar()
            label = conn.execute(text("SELECT label FROM snapshots WHERE id = 1")).scalar()
    finally:
        db.close()
    assert version == SCHEMA_HEAD and label == "from 0001"
    shown = Cli(db_url)("list", "--format", "json")
    assert json.loads(shown.stdout)["snapshots"][0]["label"] == "from 0001"


@pytest.fixture
def failing_migrations(tmp_path: Path) -> Path:
    """The real migrations plus a broken one that fails after changing the schema."""
    where = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), where, ignore=shutil.ignore_patterns("__pycache__"))
    (where / "versions" / "9000_broken.py").write_text(f'''
"""A migration that fails halfway, for tests."""
import sqlalchemy as sa
from alembic import op

revision = "9000_broken"
down_revision = "{SCHEMA_HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("half_column", sa.Integer))
    op.execute("UPDATE snapshots SET label = 'changed by a broken migration'")
    raise RuntimeError("deliberately broken migration")


def downgrade() -> None:
    pass
''')
    return where


def test_failed_migration_leaves_the_database_as_it_was(
    db_url: str, failing_migrations: Path
) -> None:
    _old_database(db_url)
    open_database(db_url).close()  # now at head, with the old snapshot in it
    path = Path(db_url) if not db_url.startswith("postgresql") else None
    if path is not None:
        con = sqlite3.connect(path)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        before_bytes = path.read_bytes()
    engine = create_engine(db_url if path is None else f"sqlite:///{path}")

    def state() -> tuple[object, ...]:
        with engine.connect() as conn:
            return (
                sorted(inspect(conn).get_table_names()),
                [c["name"] for c in inspect(conn).get_columns("snapshots")],
                conn.execute(text("SELECT version_num FROM memsnap_version")).scalar(),
                conn.execute(text("SELECT label FROM snapshots")).all(),
            )

    before = state()
    with pytest.raises(DatabaseError, match="left as it was") as info:
        open_database(db_url, script_location=failing_migrations)
    assert "deliberately broken migration" in str(info.value)
    assert state() == before
    engine.dispose()
    if path is not None:
        assert path.read_bytes() == before_bytes


# --- processes ----------------------------------------------------------------------


# Between the read of the map and the stat taken after it, no live process can be made
# to exit, exec or hand its pid on at will: a fake /proc tree (tests/fakeproc.py) changes
# exactly there. The real kernel's side of the same promise is in test_capture.py
# (processes killed mid-read).

FAKE_PID = 4242
THREAD_SYSCALL = "7 0x0 0x0 0x0 0x0 0x0 0x0 0x7ffc3a01fe40 0x55d000401234\n"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProc:
    """A fake /proc holding one process, which `memsnap record` reads instead of /proc."""
    import memsnap.capture.procfs

    proc = FakeProc(FakeProcTree(tmp_path / "proc"))
    proc.tree.add(FakeProcess(FAKE_PID, threads={FAKE_PID + 1: THREAD_SYSCALL}))
    monkeypatch.setattr(memsnap.capture.procfs, "Proc", lambda host=None: proc)
    return proc


def test_a_fake_proc_tree_records_like_proc(sqlite_cli: Cli, fake: FakeProc) -> None:
    # The tree is read as /proc is: every file, and the snapshot says what they hold.
    out = sqlite_cli("record", str(FAKE_PID))
    assert out.exit_code == 0, out.stderr
    doc = json.loads(sqlite_cli("show", "1", "--format", "json").stdout)
    snap = doc["snapshot"]
    assert (snap["pid"], snap["command"], snap["cmdline"], snap["exe"]) == (
        FAKE_PID,
        "prog",
        ["/usr/bin/prog", "--serve"],
        "/usr/bin/prog",
    )
    assert snap["start_ticks"] == 123456
    assert snap["boot_id"] == "0c5c1ef4-0000-4000-8000-000000000001"
    assert [(r["start"], r["kind"], r["rss"]) for r in doc["regions"]] == [
        ("0x55d000400000", "text", 4096),
        ("0x55d000408000", "data", 8192),
        ("0x55d001000000", "heap", 12288),
        ("0x7ffc3a000000", "stack", 16384),
    ]
    assert {"stat", "comm", "cmdline", "exe", "smaps", "task"} <= set(fake.opened)


def test_pid_reused_between_reads_records_nothing(sqlite_cli: Cli, fake: FakeProc) -> None:
    # The map is read; before the stat after it, the process exits and another takes
    # its pid: same pid, a later start time.
    fake.on_read("task", lambda: fake.tree.change(FAKE_PID, start_ticks=123556, comm="other"))
    out = sqlite_cli("record", str(FAKE_PID))
    assert out.exit_code == 1 and "pid was reused" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and snapshots(sqlite_cli) == []


def test_process_exiting_between_reads_records_nothing(sqlite_cli: Cli, fake: FakeProc) -> None:
    # The map was read; the process dies and is reaped before the reading ends.
    fake.on_read("task", lambda: fake.tree.remove(FAKE_PID))
    out = sqlite_cli("record", str(FAKE_PID))
    assert out.exit_code == 1 and "no such process" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and snapshots(sqlite_cli) == []


def test_a_map_cut_short_by_an_exit_is_not_stored(sqlite_cli: Cli, fake: FakeProc) -> None:
    # The kernel ends the text early, with no error, once the address space is torn
    # down: a well-formed half map, and a stat saying the process is exiting.
    process = fake.tree.processes[FAKE_PID]
    half = "".join(process.maps.splitlines(keepends=True)[:2])
    exiting = process.flags | PF_EXITING
    fake.on_read("smaps", lambda: fake.tree.change(FAKE_PID, smaps=smaps_of(half), flags=exiting))
    out = sqlite_cli("record", str(FAKE_PID))
    assert out.exit_code == 1 and "exited while it was read" in out.stderr, out.stderr
    assert snapshots(sqlite_cli) == []


def test_a_program_run_while_the_map_is_read_is_not_stored(sqlite_cli: Cli, fake: FakeProc) -> None:
    # exec: same pid, same start time, a new address space.
    new_space = (0x400000, 0x401000, 0x7FFF0000)
    fake.on_read("task", lambda: fake.tree.change(FAKE_PID, space=new_space))
    out = sqlite_cli("record", str(FAKE_PID))
    assert out.exit_code == 1 and "ran a new program" in out.stderr, out.stderr
    assert snapshots(sqlite_cli) == []


def test_a_zombie_and_a_kernel_thread_have_no_map(sqlite_cli: Cli, fake: FakeProc) -> None:
    fake.tree.change(FAKE_PID, smaps="", state="Z")
    out = sqlite_cli("record", str(FAKE_PID))
    assert out.exit_code == 1 and "zombie process" in out.stderr, out.stderr
    fake.tree.change(FAKE_PID, smaps="", state="S")
    out = sqlite_cli("record", str(FAKE_PID))
    assert out.exit_code == 1 and "kernel thread" in out.stderr, out.stderr
    assert snapshots(sqlite_cli) == []


@pytest.mark.live
def test_zombie_is_refused(sqlite_cli: Cli) -> None:
    child = subprocess.Popen(["true"])
    try:
        for _ in range(200):
            if Proc().state(child.pid) == "Z":
                break
            subprocess.run(["sleep", "0.01"], check=True)
        out = sqlite_cli("record", str(child.pid))
    finally:
        child.wait()
    assert out.exit_code == 1 and "zombie" in out.stderr


@pytest.mark.live
def test_gone_process_is_a_process_gone_error(target: Target) -> None:
    pid = target.pid
    target.stop()
    with pytest.raises(ProcessGone, match=f"pid {pid}: no such process"):
        Proc().capture(pid)


@pytest.fixture
def unprivileged() -> Iterator[tuple[list[str], Path]]:
    """setpriv to nobody, and a folder nobody may write to; skipped where impossible."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to drop privileges")
    user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    probe = subprocess.run(
        [*user, sys.executable, "-c", "import memsnap.cli"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this Python: {probe.stderr.strip()[-200:]}")
    folder = Path(tempfile.mkdtemp(prefix="memsnap-nobody-"))
    folder.chmod(0o777)
    yield user, folder
    shutil.rmtree(folder)


@pytest.mark.live
def test_another_users_process_is_permission_denied(
    unprivileged: tuple[list[str], Path], target: Target
) -> None:
    user, folder = unprivileged
    db = str(folder / "mine.db")
    out = memsnap(db, "record", str(target.pid), user=user)
    assert out.returncode == 1
    assert f"pid {target.pid}: permission denied (reading another user's process needs root" in (
        out.stderr
    )
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1
    listed = memsnap(db, "list", "--format", "json", user=user)
    assert json.loads(listed.stdout)["snapshots"] == []


# --- limits -------------------------------------------------------------------------


def test_huge_and_endless_imports_are_refused(sqlite_cli: Cli, tmp_path: Path) -> None:
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(300 << 20)  # sparse: refused by its size, never read
    out = sqlite_cli("record", "--from-file", str(huge), "--pid", "1")
    assert out.exit_code == 1 and "larger than 256.0 MiB" in out.stderr
    zero = sqlite_cli("record", "--from-file", "/dev/zero", "--pid", "1")
    assert zero.exit_code == 1 and "NUL" in zero.stderr
    assert not Path(sqlite_cli.url).exists()  # refused before the database was opened


@pytest.mark.live
def test_endless_pipe_is_refused_before_memory_runs_out(sqlite_url: str) -> None:
    yes = subprocess.Popen(
        ["yes", "00400000-00401000 r-xp 00000000 08:02 1 /bin/x"], stdout=subprocess.PIPE
    )
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "memsnap",
                "--db",
                sqlite_url,
                "record",
                "--from-file",
                "-",
                "--pid",
                "1",
            ],
            stdin=yes.stdout,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        yes.send_signal(signal.SIGTERM)
        yes.wait()
    assert out.returncode == 1 and "larger than" in out.stderr


# --- hostile text -------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_labels_and_names_pass_through(cli: Cli, target: Target, value: str) -> None:
    done = cli("record", str(target.pid), "--label", value)
    assert done.exit_code == 0, done.stderr
    (snap,) = snapshots(cli)
    assert snap["label"] == value
    # --name is a regex searched in the command line (pgrep -f), never in the label:
    # each of these is a valid regex the target's command line does not hold.
    pattern = value[:40]
    re.compile(pattern)
    found = cli("list", "--name", pattern, "--format", "json")
    assert found.exit_code == 0, found.stderr
    assert json.loads(found.stdout)["snapshots"] == []
    (named,) = json.loads(cli("list", "--name", "target", "--format", "json").stdout)["snapshots"]
    assert named["label"] == value
    table = cli("list")
    assert table.exit_code == 0
    assert cli("show", "1", "--format", "csv").exit_code == 0


def test_undecodable_bytes_in_paths_and_names(cli: Cli) -> None:
    raw = (
        b"00400000-00401000 r-xp 00000000 08:02 7 /opt/caf\xe9/bin/\xff\xfeprog\n"
        b"00401000-00402000 rw-p 00001000 08:02 7 /opt/caf\xe9/bin/\xff\xfeprog\n"
    )
    done = cli("record", "--from-file", "-", "--pid", "5", input=raw)
    assert done.exit_code == 0, done.stderr
    doc = json.loads(cli("show", "1", "--format", "json").stdout)
    assert {r["path"] for r in doc["regions"]} == {"/opt/caf\\xe9/bin/\\xff\\xfeprog"}
    assert [r["kind"] for r in doc["regions"]] == ["text", "data"]


@pytest.mark.live
def test_a_record_that_fails_leaves_no_row_at_all(
    sqlite_url: str, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import func, select

    import memsnap.capture.record
    from memsnap.errors import ParseError
    from memsnap.store.schema import paths, processes, regions

    def broken(text_: str) -> None:
        raise ParseError(7, "garbage", "not a maps line")

    monkeypatch.setattr(memsnap.capture.record, "parse_text", broken)
    out = Cli(sqlite_url)("record", str(target.pid))
    assert out.exit_code == 1 and "line 7" in out.stderr
    db = open_database(sqlite_url)
    try:
        with db.reading() as conn:
            for table in (processes, paths, regions):
                assert conn.execute(select(func.count()).select_from(table)).scalar() == 0
    finally:
        db.close()
