"""The `memsnap` command ends its process without tearing the interpreter down
(`memsnap.cli.end`): what an exit must do still happens. Each test runs memsnap as a
command, since an in-process run (the `Cli` helper) never reaches that end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Cli, Target, capture_path

# A capture from this project's test machine (tests/fixtures/maps/SOURCES.md).
LOCAL_SMAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-smaps.txt"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    # Buffered, as a pipe is by default: what is unflushed at the end shows missing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [("None", 0, ""), ("0", 0, ""), ("3", 3, ""), ("-1", 255, ""), ("'why'", 1, "why\n")],
)
def test_the_exit_status_is_what_sys_exit_would_give(code: str, status: int, stderr: str) -> None:
    done = _python(f"import memsnap.cli as c; c.end({code})")
    assert (done.returncode, done.stdout, done.stderr) == (status, "", stderr)


def test_atexit_handlers_run_and_buffered_output_is_flushed_first() -> None:
    done = _python(
        "import atexit, sys, memsnap.cli as c\n"
        "atexit.register(lambda: sys.stdout.write(' and after'))\n"
        "sys.stdout.write('before' * 10000)\n"
        "sys.stderr.write('err')\n"
        "c.end(4)\n"
    )
    assert done.returncode == 4
    assert done.stdout == "before" * 10000 + " and after"
    assert done.stderr == "err"


def _memsnap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memsnap", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.live
def test_a_big_document_reaches_a_pipe_whole(tmp_path: Path, target: Target) -> None:
    target.send("pages 5000")
    db = str(tmp_path / "exit.db")
    recorded = _memsnap("--db", db, "record", str(target.pid))
    assert recorded.returncode == 0, recorded.stderr
    shown = _memsnap("--db", db, "show", "1", "--format", "json")
    assert shown.returncode == 0 and shown.stderr == ""
    assert len(json.loads(shown.stdout)["regions"]) > 5000
    # The same document as memsnap run in-process, which exits as Python does.
    assert shown.stdout == Cli(db)("show", "1", "--format", "json").stdout


@pytest.mark.live
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path, target: Target) -> None:
    target.send("pages 5000")
    db = str(tmp_path / "exit.db")
    assert _memsnap("--db", db, "record", str(target.pid)).returncode == 0
    show = subprocess.Popen(
        [sys.executable, "-m", "memsnap", "--db", db, "show", "1", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert show.stdout is not None and show.stderr is not None
    assert show.stdout.read(10) == b'{\n  "forma'
    show.stdout.close()  # the reader is gone: memsnap's next write fails (EPIPE)
    err = show.stderr.read().decode()
    assert show.wait() == 0  # as before memsnap ended this way
    assert "Traceback" not in err and len(err.splitlines()) <= 2


def test_standard_output_closed_from_the_start_is_no_failure(tmp_path: Path) -> None:
    """Python has no sys.stdout then: there is nothing to flush."""
    db = str(tmp_path / "closed.db")
    imported = Cli(db)("record", "--from-file", str(capture_path(LOCAL_SMAPS)), "--pid", "4242")
    assert imported.exit_code == 0
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" -m memsnap --db "$1" list >&-', sys.executable, db],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
