"""`record PID` reads the process on a second thread while the database layer loads
(memsnap.capture.ahead): which thread read what, and that a failed read ahead changes
nothing a person sees. That the snapshots are the same with and without it is
tests/test_fast_paths.py's (MEMSNAP_AHEAD)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target
from memsnap.capture import ahead
from memsnap.capture.procfs import Proc

AHEAD_THREAD = "memsnap-ahead"


def _required_here() -> bool:
    """CI builds the extension (MEMSNAP_REQUIRE_NATIVE=1) on a machine of two cores: there
    the read ahead must run, so a `worth_it` that always said no could not pass."""
    return os.environ.get("MEMSNAP_REQUIRE_NATIVE") == "1" and len(os.sched_getaffinity(0)) >= 2


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, int]]]:
    """(what, thread, pid) of every quick read and whole read of a process's map."""
    seen: list[tuple[str, str, int]] = []

    def spy(what: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def read(self: Proc, pid: int, *args: Any, **kwargs: Any) -> Any:
            seen.append((what, threading.current_thread().name, pid))
            return real(self, pid, *args, **kwargs)

        return read

    monkeypatch.setattr(Proc, "quick", spy("quick", Proc.quick))
    monkeypatch.setattr(Proc, "capture", spy("capture", Proc.capture))
    monkeypatch.delenv("MEMSNAP_AHEAD", raising=False)
    monkeypatch.delenv("MEMSNAP_QUICK", raising=False)
    yield seen


@pytest.fixture
def worth_it() -> None:
    if not ahead.worth_it():
        assert not _required_here(), "the read ahead is off where CI requires it"
        pytest.skip("the read ahead needs the C extension and a second CPU")


def _snapshots(cli: Cli) -> list[dict[str, Any]]:
    out = cli("list", "--format", "json")
    assert out.exit_code == 0, out.stderr
    return sorted(json.loads(out.stdout)["snapshots"], key=lambda s: s["seq"])


@pytest.mark.live
@pytest.mark.usefixtures("worth_it")
def test_one_process_is_read_ahead_and_what_it_needs_is_taken(
    sqlite_cli: Cli, target: Target, reads: list[tuple[str, str, int]]
) -> None:
    target.send("pages 2000")
    # Never recorded: its whole map, read ahead, is what is stored.
    assert sqlite_cli("record", str(target.pid)).exit_code == 0
    assert reads == [
        ("quick", AHEAD_THREAD, target.pid),
        ("capture", AHEAD_THREAD, target.pid),
    ]
    # Recorded before: the signal read ahead decides. Where it says unchanged the
    # snapshot is a copy and the main thread reads nothing; otherwise it only reads the
    # signal again, to check it still describes the map read ahead. (The second record
    # stores the first signal; the rollup's Pss can move a little between records, so a
    # copy is waited for over a few.)
    main_reads = []
    for _ in range(6):
        reads.clear()
        assert sqlite_cli("record", str(target.pid)).exit_code == 0
        # (The read ahead may still be reading the smaps nobody needs when a copy is
        # stored: only what came first, and what the main thread read, is certain.)
        assert reads[0] == ("quick", AHEAD_THREAD, target.pid)
        main_reads.append([r for r in reads if r[1] == "MainThread"])
        assert all(r == ("quick", "MainThread", target.pid) for r in main_reads[-1])
        if len(main_reads) > 1 and not main_reads[-1]:
            break
    assert not main_reads[-1], "no record of an untouched process was a copy"
    snapshots = _snapshots(sqlite_cli)
    assert len(snapshots) == 1 + len(main_reads)
    assert len({s["totals"]["regions"] for s in snapshots}) == 1


@pytest.mark.live
@pytest.mark.usefixtures("worth_it")
def test_only_a_one_shot_record_of_one_process_reads_ahead(
    sqlite_cli: Cli, target: Target, reads: list[tuple[str, str, int]]
) -> None:
    pid = str(target.pid)
    for args in (
        [pid, pid, str(os.getppid())],  # several processes
        ["--no-smaps", pid],  # maps only: a small read
        ["--every", "0.01", "--count", "2", pid],  # a watch
        ["--name", "target", pid],  # a name to match first
    ):
        reads.clear()
        assert sqlite_cli("record", *args).exit_code == 0
        assert reads and all(thread == "MainThread" for _, thread, _ in reads), args


@pytest.mark.live
def test_memsnap_ahead_0_reads_on_the_main_thread(
    sqlite_cli: Cli,
    target: Target,
    reads: list[tuple[str, str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEMSNAP_AHEAD", "0")
    assert not ahead.worth_it()
    assert sqlite_cli("record", str(target.pid)).exit_code == 0
    assert reads == [("capture", "MainThread", target.pid)]


@pytest.mark.live
def test_a_process_gone_is_reported_alike_with_and_without_the_read_ahead(
    tmp_path: Path, target_binary: Path
) -> None:
    """The read ahead fails first, quietly; the main thread's read says why, as always."""
    gone = Target(target_binary)
    gone.stop()
    answers = []
    for value in ("1", "0"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "memsnap",
                "--db",
                str(tmp_path / f"{value}.db"),
                "record",
                str(gone.pid),
            ],
            env=os.environ | {"MEMSNAP_AHEAD": value},
            capture_output=True,
            text=True,
        )
        answers.append((done.returncode, done.stdout, done.stderr))
    assert answers[0] == answers[1]
    assert answers[0] == (1, "", f"memsnap: pid {gone.pid}: no such process\n")
