"""Shared test fixtures: databases (SQLite always, PostgreSQL when configured), the CLI,
and a live helper process whose layout tests change on command.

PostgreSQL tests run when MEMSNAP_TEST_PG_URL names a server (`.ci/run` sets it); each
test gets a schema of its own, dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memsnap.cli import app
from memsnap.store.database import Database, open_database

# Real captures from other machines and peer tools' data, kept in the repository with
# their sources and licences (tests/fixtures/maps/SOURCES.md, tests/fixtures/peers/*/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MAPS = FIXTURES / "maps"
PEERS = FIXTURES / "peers"
HELPERS = Path(__file__).resolve().parent / "helpers"

PG_URL = os.environ.get("MEMSNAP_TEST_PG_URL")
PG_SKIP = "PostgreSQL tests need MEMSNAP_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"


def capture_path(name: str) -> Path:
    """A real capture from tests/fixtures/maps; a missing one fails the test."""
    path = MAPS / name
    assert path.is_file(), f"missing capture {path}"
    return path


def fixture_text(name: str) -> str:
    return capture_path(name).read_text(encoding="utf-8", errors="surrogateescape")


# Fixtures that start a process to watch (the C helper, or plain_target's interpreter): a
# test using one starts a real process, and must say so with @pytest.mark.live, so that
# `pytest -m "not live"` runs only what needs neither a compiler nor a process to watch.
LIVE_FIXTURES = frozenset({"target", "target_binary", "plain_target", "hostile", "findings_binary"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = LIVE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses and item.get_closest_marker("live") is None:
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(sorted(uses))} but is not marked live"
            )


@pytest.fixture(autouse=True)
def _no_read_ahead_left() -> Iterator[None]:
    """An in-process `record PID` may return while its read ahead (memsnap.capture.ahead)
    still reads what nobody needs: it is waited for, so that it never runs into the next
    test's spies on `Proc`."""
    yield
    for thread in threading.enumerate():
        if thread.name == "memsnap-ahead":
            thread.join(timeout=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "memsnap.db")
        return
    yield from _pg_schema()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, for what only PostgreSQL has."""
    yield from _pg_schema()


def _pg_schema() -> Iterator[str]:
    if not PG_URL:
        pytest.skip(PG_SKIP)
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "memsnap.db")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


class Cli:
    """Runs memsnap's CLI in-process against one database, with a fixed width.

    Unforeseen exceptions reach the test (MEMSNAP_DEBUG) instead of becoming the one-line
    "internal error" a person would see, unless `debug=False`.
    """

    def __init__(self, url: str, debug: bool = True) -> None:
        self.url = url
        self.runner = CliRunner()
        self.debug = debug

    def __call__(self, *args: str, input: str | bytes | None = None) -> Result:
        result = self.runner.invoke(
            app,
            ["--db", self.url, *args],
            input=input,
            prog_name="memsnap",
            env={"COLUMNS": "200", "NO_COLOR": "1", "MEMSNAP_DEBUG": "1" if self.debug else None},
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli(db_url)


@pytest.fixture
def sqlite_cli(sqlite_url: str) -> Cli:
    return Cli(sqlite_url)


NO_CC = "live-process tests build a small C helper and need a C compiler (cc)"


def build_helper(
    factory: pytest.TempPathFactory, name: str, flags: Sequence[str], libs: Sequence[str]
) -> tuple[Path, subprocess.CompletedProcess[str]] | None:
    """tests/helpers/NAME.c compiled into a new folder of its own (`flags` before the
    source, `libs` after it), with what the compiler said; None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = factory.mktemp(name) / name
    source = str(HELPERS / f"{name}.c")
    done = subprocess.run(
        [cc, "-O1", *flags, "-o", str(out), source, *libs], capture_output=True, text=True
    )
    return out, done


@pytest.fixture(scope="session")
def target_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build_helper(tmp_path_factory, "target", ["-Wall"], ["-ldl", "-lpthread"])
    if built is None:
        pytest.skip(NO_CC)
    out, done = built
    assert done.returncode == 0, done.stderr
    return written_back(out)


def written_back(binary: Path) -> Path:
    """A program just built, its pages written to disk: until the kernel writes them back
    they are dirty in the page cache, and smaps shows its text as Shared_Dirty, then, in
    the middle of a test, as Shared_Clean."""
    fd = os.open(binary, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return binary


class Target:
    """A live helper process; `send` performs one layout change and returns its answer.

    `binary` is the C helper (tests/helpers/target.c) or, with the script as its first
    argument, the Python interpreter running tests/helpers/plain_target.py."""

    def __init__(self, binary: Path, args: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        assert ready[0] == "ready", ready
        self.pid = int(ready[1])

    def send(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer.startswith("ok"), f"{command}: {answer}"
        return answer[3:]

    def address(self, command: str) -> int:
        return int(self.send(command), 16)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def target(target_binary: Path) -> Iterator[Target]:
    t = Target(target_binary)
    yield t
    t.stop()


@pytest.fixture
def plain_target() -> Iterator[Target]:
    """A live process that needs no C compiler: it answers `pages`, `anon` and `dlopen`
    as the C helper does (tests/helpers/plain_target.py), and nothing else."""
    t = Target(Path(sys.executable), (str(HELPERS / "plain_target.py"),))
    yield t
    t.stop()


# --- the findings helper (tests/helpers/findings.c): one process per trigger of a rule ---


@pytest.fixture(scope="session")
def findings_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build_helper(tmp_path_factory, "findings", ["-Wall"], ["-ldl"])
    if built is None:
        pytest.fail("the live findings and check tests build tests/helpers/findings.c and need cc")
    out, done = built
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def helper(findings_binary: Path) -> Iterator[Target]:
    t = Target(findings_binary)
    yield t
    t.stop()


@pytest.fixture(scope="session")
def libz() -> Path:
    """The system's libz, wherever this distribution keeps it."""
    from memsnap.parse import parse_text

    ctypes.CDLL("libz.so.1")
    for m in parse_text(Path("/proc/self/maps").read_bytes()).mappings:
        if m.path is not None and Path(m.path).name.startswith("libz.so"):
            return Path(m.path)
    raise AssertionError("libz.so.1 loaded but not in /proc/self/maps")


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A directory under /tmp itself (for exec-from-tmp, whatever --basetemp says)."""
    path = Path(tempfile.mkdtemp(prefix="memsnap-findings-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
