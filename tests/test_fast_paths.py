"""Nothing recorded changes with the fast paths: every snapshot, diff and replay is shown
the same (JSON, ids and times aside) whether `record` took its fast paths or not.

The fast paths, each turned off by its variable set to 0: the quick "unchanged" signal
(MEMSNAP_QUICK), the native smaps parser (MEMSNAP_NATIVE), the overlapped read, parse
and insert (MEMSNAP_PIPELINE) and the read ahead of a one-process record
(MEMSNAP_AHEAD). The same real processes are recorded step by step into two databases,
each record made once with every fast path forced on (each variable 1)
and once with every one off, back to back, by `memsnap record` run as a command (a
variable read when a module is imported counts too); then everything shown of the two
databases is compared.

The processes are the C helper linked statically: it maps no shared library, so no other
process on the machine moves its proportional sizes (Pss) between two records. (A
dynamically linked process's per-region Pss moves whenever another process maps or
unmaps a library it maps, sometimes keeping every total: the quick signal's documented
blind spot, which tests/test_quick.py covers both ways on a fake proc tree.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import NO_CC, Cli, Target, build_helper, written_back

FAST_PATHS = ("MEMSNAP_QUICK", "MEMSNAP_NATIVE", "MEMSNAP_PIPELINE", "MEMSNAP_AHEAD")
# What differs between two databases that hold the same snapshots: their row ids and the
# times the records were made.
UNSHOWN = frozenset({"id", "taken_at"})


@pytest.fixture(scope="session")
def static_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build_helper(tmp_path_factory, "target", ["-static"], ["-ldl", "-lpthread"])
    if built is None:
        pytest.skip(NO_CC)
    out, done = built
    if done.returncode != 0:
        pytest.skip(f"the static helper needs a static C library (libc.a): {done.stderr[-300:]}")
    # Recorded twice back to back, its text must not turn from dirty to clean in between.
    return written_back(out)


@pytest.fixture
def helpers(static_binary: Path) -> Iterator[Callable[[], Target]]:
    """Start static helpers; each is stopped at the end."""
    started: list[Target] = []

    def start() -> Target:
        started.append(Target(static_binary))
        return started[-1]

    yield start
    for t in started:
        t.stop()


class Twin:
    """Two databases recorded alike, one with every fast path, one with none."""

    def __init__(self, folder: Path) -> None:
        self.on = str(folder / "fast.db")
        self.off = str(folder / "slow.db")

    def record(self, *args: str) -> None:
        for url, fast in ((self.on, True), (self.off, False)):
            # On is asked for: the overlap is used only with MEMSNAP_PIPELINE=1.
            env = os.environ | dict.fromkeys(FAST_PATHS, "1" if fast else "0")
            done = subprocess.run(
                [sys.executable, "-m", "memsnap", "--db", url, "record", *args],
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr

    def shown(self, pids: list[int], *, with_diffs: bool = True) -> tuple[Any, Any]:
        """Everything shown of the processes `pids` in each database: each snapshot, the
        diff of each with the one before, and each process's replay."""
        return _shown(Cli(self.on), pids, with_diffs), _shown(Cli(self.off), pids, with_diffs)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in UNSHOWN}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _json(cli: Cli, *args: str) -> Any:
    out = cli(*args, "--format", "json")
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def _shown(cli: Cli, pids: list[int], with_diffs: bool) -> dict[str, Any]:
    listed = _json(cli, "list")["snapshots"]
    shown: dict[str, Any] = {}
    for pid in pids:
        ids = [s["id"] for s in sorted(listed, key=lambda s: s["seq"]) if s["pid"] == pid]
        assert ids, f"pid {pid} was not recorded"
        for n, snapshot in enumerate(ids):
            shown[f"{pid} show {n + 1}"] = _scrub(_json(cli, "show", str(snapshot)))
            if with_diffs and n:
                diff = _json(cli, "diff", str(ids[n - 1]), str(snapshot))
                shown[f"{pid} diff {n}-{n + 1}"] = _scrub(diff)
        shown[f"{pid} replay"] = _scrub(_json(cli, "replay", "--pid", str(pid)))
    return shown


def changes(small: Target, big: Target, folder: Path) -> Iterator[str]:
    """Layout and size changes of the two helpers, each followed by a record of both
    (unchanged ones included: that is where the quick signal acts)."""
    yield "first record"
    yield "unchanged"
    small.send("anon 1048576")
    for t in (small, big):
        t.send("pair")
    yield "a new anonymous region, two regions one of them touched"
    for t in (small, big):
        t.send("grow")
    yield "the second region touched: sizes moved, the layout is the same"
    yield "unchanged"
    data = folder / "data.bin"
    data.write_bytes(b"x" * 4096)
    small.send("thread")
    small.send(f"map {data}")
    small.send(f"deleted {folder}")
    small.send("memfd")
    big.send("heap 65536")
    yield "a thread, a mapped file, a deleted one and a memfd; the heap grown"
    small.send("unmap-anon")
    yield "the anonymous region gone"
    yield "unchanged"


@pytest.mark.live
@pytest.mark.parametrize(
    ("smaps", "apart"),
    [([], False), (["--no-smaps"], False), ([], True)],
    # One process a command is the read ahead's case (tests/test_ahead.py).
    ids=["smaps", "no-smaps", "one-process-a-command"],
)
def test_records_are_the_same_with_and_without_fast_paths(
    tmp_path: Path, helpers: Callable[[], Target], smaps: list[str], apart: bool
) -> None:
    small, big = helpers(), helpers()
    big.send("pages 10000")  # about 5 MiB of smaps: read, parsed and stored in pieces
    twin = Twin(tmp_path)
    steps = []
    for step in changes(small, big, tmp_path):
        for pids in [[small.pid], [big.pid]] if apart else [[small.pid, big.pid]]:
            twin.record(*smaps, *map(str, pids))
        steps.append(step)
    fast, slow = twin.shown([small.pid, big.pid])
    assert len(fast) == 2 * 2 * len(steps)  # each snapshot, each diff, and the replay
    for key in fast:
        assert fast[key] == slow[key], key


@pytest.mark.live
def test_record_all_rounds_are_the_same_with_and_without_fast_paths(
    tmp_path: Path, helpers: Callable[[], Target]
) -> None:
    small, big = helpers(), helpers()
    big.send("pages 5000")
    twin = Twin(tmp_path)
    twin.record("--all")
    twin.record("--all")  # every process recorded before: the quick signal decides
    small.send("anon 65536")
    big.send("pair")
    twin.record("--all")
    fast, slow = twin.shown([small.pid, big.pid])
    assert len(fast) == 2 * (3 + 3)
    for key in fast:
        assert fast[key] == slow[key], key


@pytest.mark.live
def test_the_quick_signal_both_ways_on_a_live_process(
    tmp_path: Path, helpers: Callable[[], Target], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untouched process is stored as a copy without its smaps being read; the same
    layout with sizes moved (a page touched) is read whole and recorded as changed."""
    from memsnap.capture.procfs import Proc

    monkeypatch.delenv("MEMSNAP_QUICK", raising=False)
    # A one-process record reads smaps ahead on a second thread whatever the signal will
    # say (tests/test_ahead.py): this counts the reads the signal saves without it.
    monkeypatch.setenv("MEMSNAP_AHEAD", "0")
    t = helpers()
    second = t.address("pair") + 2 * 4096
    smaps_reads: list[int] = []
    real = Proc.file

    def spy(self: Proc, pid: int, name: str) -> str:
        if name == "smaps":
            smaps_reads.append(pid)
        return real(self, pid, name)

    monkeypatch.setattr(Proc, "file", spy)
    cli = Cli(str(tmp_path / "quick.db"))
    # The first record is new; the second, unchanged, stores the signal; from the third
    # on, a copy. The rollup's Pss holds the [vdso] page's share, which moves a little
    # with the number of processes on the machine: now and then a total crosses a
    # kilobyte and the signal differs (a wasted full read, harmless), so a copy is
    # waited for over a few records.
    records = 0
    while records < 8 and (records < 3 or len(smaps_reads) == records):
        assert cli("record", str(t.pid)).exit_code == 0
        records += 1
    assert len(smaps_reads) == records - 1, "no record of an untouched process was a copy"
    t.send("grow")
    assert cli("record", str(t.pid)).exit_code == 0
    assert len(smaps_reads) == records
    ids = [s["id"] for s in sorted(_json(cli, "list")["snapshots"], key=lambda s: s["seq"])]
    shown = [_scrub(_json(cli, "show", str(i))) for i in ids]
    for snapshot in shown:
        del snapshot["snapshot"]["seq"]
    assert shown[-2] == shown[-3] != shown[-1]

    def rss(snapshot: Any) -> list[int]:
        return [
            r["rss"]
            for r in snapshot["regions"]
            if int(r["start"], 16) <= second < int(r["end"], 16)
        ]

    assert [b - a for a, b in zip(rss(shown[-2]), rss(shown[-1]), strict=True)] == [4096]
