"""`record PID` reads the process on a second thread while the database layer loads
(memsnap.capture.ahead): which thread read what, and that a failed read ahead changes
nothing a person sees. That the snapshots are the same with and without it is
tests/test_fast_paths.py's (MEMSNAP_AHEAD)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

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
    # Never recorded: its whole map, read ahead, is what is stored. The main thread
    # reads nothing (the signal read again after the map may still be under way).
    assert sqlite_cli("record", str(target.pid)).exit_code == 0
    assert reads[:2] == [
        ("quick", AHEAD_THREAD, target.pid),
        ("capture", AHEAD_THREAD, target.pid),
    ]
    assert all(thread == AHEAD_THREAD for _, thread, _ in reads)
    # Recorded before: the signal read ahead decides, a copy where it says unchanged,
    # else the map read ahead and checked there against the signal read after it: the
    # main thread reads nothing either way. (The second record stores the first signal;
    # the rollup's Pss can move a little between records, so a copy is waited for over
    # a few.)
    records = 1
    while records < 8 and _copies(sqlite_cli.url) == 0:
        reads.clear()
        assert sqlite_cli("record", str(target.pid)).exit_code == 0
        records += 1
        assert reads[0] == ("quick", AHEAD_THREAD, target.pid)
        assert all(thread == AHEAD_THREAD for _, thread, _ in reads)
    assert _copies(sqlite_cli.url) == 1, "no record of an untouched process was a copy"
    snapshots = _snapshots(sqlite_cli)
    assert len(snapshots) == records
    assert len({s["totals"]["regions"] for s in snapshots}) == 1


def _copies(path: str) -> int:
    """Snapshots stored as a copy of the one before (sharing its per-kind totals)."""
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT count(*) FROM snapshots WHERE kinds_from IS NOT NULL")
        return int(found.fetchone()[0])


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


class _Reads:
    """A stand-in for `Proc` whose quick signals are given in turn."""

    def __init__(self, signals: list[str]) -> None:
        self.signals = iter(signals)

    def quick(self, pid: int, smaps: bool = True, info: object = None) -> Any:
        return SimpleNamespace(value=next(self.signals), info=SimpleNamespace(pid=pid))

    def capture(self, pid: int, smaps: bool = True, info: object = None) -> Any:
        return SimpleNamespace(pid=pid)


@pytest.mark.parametrize(("signals", "settled"), [(["a", "a"], True), (["a", "b"], False)])
def test_the_signal_is_read_again_right_after_the_map(signals: list[str], settled: bool) -> None:
    """Only a signal read both before and right after the map may be stored with it: a
    check made later, on the main thread, could miss a change undone in between."""
    early = ahead.ReadAhead(cast(Proc, _Reads(signals)), 4242)
    assert early.capture is not None and early.quick is not None
    assert early.quick.value == "a"
    assert early.settled is settled


@pytest.mark.live
@pytest.mark.usefixtures("worth_it", "reads")
@pytest.mark.parametrize("settled", [True, False])
def test_a_signal_is_stored_only_when_it_settled(
    sqlite_cli: Cli, target: Target, monkeypatch: pytest.MonkeyPatch, settled: bool
) -> None:
    monkeypatch.setattr(ahead.ReadAhead, "settled", property(lambda _self: settled))
    assert sqlite_cli("record", str(target.pid)).exit_code == 0  # new: stores no signal
    target.send("anon 65536")  # changed: the map read ahead is stored
    assert sqlite_cli("record", str(target.pid)).exit_code == 0
    with sqlite3.connect(sqlite_cli.url) as conn:
        digest = conn.execute("SELECT digest FROM snapshots ORDER BY id DESC").fetchone()[0]
    assert ("/" in digest) is settled  # the full text's hash, then '/' and the signal's
