"""Live recording integrity: the kernel is the oracle for what a whole snapshot is.

A process killed while its smaps is being read leaves a short text that parses fine;
these tests kill real processes at random points of real reads and check that no
stored snapshot is missing a region.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target
from memsnap.capture import procfs, sweep
from memsnap.capture.procfs import Proc, Stat, denied_message, read_bytes, split_cmdline
from memsnap.capture.record import record_pid
from memsnap.errors import ProcessError
from memsnap.store.database import open_database

PAGES = 20_000  # one-page mappings: a smaps text of about 15 MiB
READS = 32


def snapshots(cli: Cli) -> list[dict[str, Any]]:
    out = cli("list", "--format", "json")
    assert out.exit_code == 0, out.stderr
    return list(json.loads(out.stdout)["snapshots"])


def region_count(pid: int) -> int:
    return read_bytes(f"/proc/{pid}/maps").count(b"\n")


@pytest.mark.live
def test_process_killed_mid_read_is_never_stored_truncated(
    target_binary: Path, sqlite_url: str
) -> None:
    """32 processes of ~20,000 mappings, each killed with SIGKILL at a random moment
    within the time one read of its smaps takes; every stored snapshot must hold every
    region the process had. Half are reaped at once (the pid vanishes), half stay
    zombies (the parent has not waited yet), as under a real supervisor."""
    rng = random.Random(int(os.environ.get("MEMSNAP_TEST_SEED", "0")) or None)
    proc = Proc()
    db = open_database(sqlite_url)
    probe = Target(target_binary)
    try:
        probe.send(f"pages {PAGES}")
        started = time.perf_counter()
        proc.capture(probe.pid)
        read_time = time.perf_counter() - started
    finally:
        probe.stop()
    kills = stored = truncated = refused = 0
    try:
        for n in range(READS):
            t = Target(target_binary)
            t.send(f"pages {PAGES}")
            expected = region_count(t.pid)
            reap = n % 2 == 0

            def kill(t: Target = t, reap: bool = reap) -> None:
                t.proc.send_signal(signal.SIGKILL)
                if reap:
                    t.proc.wait()

            timer = threading.Timer(rng.uniform(0, read_time), kill)
            timer.start()
            try:
                done = record_pid(db, proc, t.pid)
            except ProcessError:
                refused += 1
            else:
                stored += 1
                truncated += done.totals.regions != expected
            finally:
                timer.join()
                kills += 1
                t.stop()
    finally:
        db.close()
    print(
        f"\nkilled mid-read: {READS} reads of {PAGES + 15}-odd mappings "
        f"(one read {read_time * 1000:.0f} ms), {kills} kills, {stored} stored "
        f"({stored - truncated} whole), {refused} refused, truncated stored = {truncated}"
    )
    assert truncated == 0
    assert refused > 0  # the kills did land inside reads: otherwise this proves nothing


def test_stat_tells_an_exiting_process() -> None:
    # Field 9 (flags) with PF_EXITING, and a command name holding ') ' to mislead a split.
    base = "42 (a) b) {state} 1 42 42 0 -1 {flags} " + " ".join(["0"] * 12) + " 777 {vsize} "
    tail = "1 1 4096 8192 65536 " + " ".join(["0"] * 20)
    alive = Stat.parse(base.format(state="S", flags=0x400000, vsize=123) + tail)
    assert not alive.exiting and alive.start_ticks == 777 and alive.vsize == 123
    assert alive.space == (4096, 8192, 65536)
    assert Stat.parse(base.format(state="S", flags=0x400004, vsize=123) + tail).exiting
    assert Stat.parse(base.format(state="Z", flags=0, vsize=0) + tail).exiting
    assert Stat.parse(base.format(state="X", flags=0, vsize=0) + tail).exiting


@pytest.mark.live
def test_own_stat_parses() -> None:
    me = Proc().stat(os.getpid())
    assert me.state == "R" and not me.exiting and me.vsize > 0 and me.space[0] > 0


@pytest.mark.live
def test_watch_of_a_process_killed_mid_read_ends_without_a_truncated_snapshot(
    target: Target, sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--every` over a process that dies while its second snapshot is read: the watch
    ends there, and the one snapshot kept is whole. The kill lands at a fixed point of
    the real read (after its first 64 KiB), so the kernel really cuts the text short."""
    target.send(f"pages {PAGES}")
    expected = region_count(target.pid)
    smaps = f"/proc/{target.pid}/smaps"
    reads = 0

    def read_and_kill(path: str | Path) -> bytes:
        nonlocal reads
        if str(path) != smaps:
            return read_bytes(path)
        reads += 1
        if reads < 2:
            return read_bytes(path)
        with open(path, "rb", buffering=0) as f:
            head = f.read(1 << 16)
            target.proc.send_signal(signal.SIGKILL)
            while Proc().state(target.pid) != "Z":  # exited, not yet reaped
                time.sleep(0.005)
            return head + f.readall()

    # A first record of a big process reads its smaps a piece at a time (`record_new`):
    # counted too, so that the read killed is the second one whichever way it is made.
    map_reader = Proc.map_reader

    def counted(self: Proc, pid: int, smaps: bool = True, info: Any = None) -> Any:
        nonlocal reads
        reads += 1
        return map_reader(self, pid, smaps, info)

    monkeypatch.setattr(Proc, "map_reader", counted)
    monkeypatch.setattr(procfs, "read_bytes", read_and_kill)
    out = sqlite_cli("record", str(target.pid), "--every", "0.01", "--count", "5")
    assert out.exit_code == 0, out.stderr
    assert f"pid {target.pid} exited" in out.stderr
    counts = [s["totals"]["regions"] for s in snapshots(sqlite_cli)]
    assert counts == [expected]


def test_trailing_nul_padding_is_not_arguments() -> None:
    assert split_cmdline("postgres: 15/main: background writer" + "\0" * 80) == (
        "postgres: 15/main: background writer",
    )
    assert split_cmdline("a\0b c\0") == ("a", "b c")
    assert split_cmdline("no terminator") == ("no terminator",)
    assert split_cmdline("") == ()


@pytest.mark.live
@pytest.mark.parametrize("reap", [True, False])
def test_killed_process_message(target: Target, sqlite_cli: Cli, reap: bool) -> None:
    pid = target.pid
    target.proc.send_signal(signal.SIGKILL)
    if reap:
        target.proc.wait()
    else:
        while Proc().state(pid) != "Z":
            time.sleep(0.01)
    out = sqlite_cli("record", str(pid))
    assert out.exit_code == 1
    assert ("no such process" if reap else "zombie") in out.stderr


# --- record's messages and counts -----------------------------------------------------


@pytest.fixture
def three(target_binary: Path) -> Iterator[list[Target]]:
    targets = [Target(target_binary) for _ in range(3)]
    yield targets
    for t in targets:
        t.stop()


def fail_after(monkeypatch: pytest.MonkeyPatch, calls: int, then: Callable[[], None]) -> None:
    """Make the sweep's `record_pid` run `then` once `calls` snapshots were stored."""
    from memsnap.capture.record import record_pid as real  # what the sweep calls

    done = 0

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        if done == calls:
            then()
        done += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "record_pid", wrapped)


@pytest.mark.live
def test_interrupt_mid_round_counts_what_was_kept(
    sqlite_cli: Cli, three: list[Target], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    fail_after(monkeypatch, 2, interrupt)
    out = sqlite_cli("record", *(str(t.pid) for t in three))
    assert out.exit_code == 130
    assert len(out.stdout.splitlines()) == len(snapshots(sqlite_cli)) == 2
    assert "interrupted: 2 finished snapshots kept" in out.stderr


@pytest.mark.live
def test_interrupt_after_one_says_one_snapshot(
    sqlite_cli: Cli, three: list[Target], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    fail_after(monkeypatch, 1, interrupt)
    out = sqlite_cli("record", str(three[0].pid), "--every", "0.01")
    assert out.exit_code == 130
    assert "interrupted: 1 finished snapshot kept," in out.stderr


@pytest.mark.live
def test_a_pid_given_twice_is_recorded_once(sqlite_cli: Cli, target: Target) -> None:
    out = sqlite_cli("record", str(target.pid), str(target.pid))
    assert out.exit_code == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(snapshots(sqlite_cli)) == 1


def free_pid() -> int:
    """A pid that names no process: a child's, once it was reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert not Path(f"/proc/{child.pid}").exists()
    return child.pid


@pytest.mark.live
def test_watch_of_a_pid_that_never_was_says_no_such_process(
    sqlite_cli: Cli, target: Target
) -> None:
    dead = free_pid()
    out = sqlite_cli("record", str(target.pid), str(dead), "--every", "0.01", "--count", "2")
    assert out.exit_code == 1
    assert f"memsnap: pid {dead}: no such process\n" in out.stderr
    assert "exited" not in out.stderr and len(snapshots(sqlite_cli)) == 2


@pytest.mark.live
def test_watch_counts_snapshots_per_pid(
    sqlite_cli: Cli, three: list[Target], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = three[0], three[1]
    fail_after(monkeypatch, 3, b.stop)  # a, b in round 1; a in round 2; then b exits
    out = sqlite_cli("record", str(a.pid), str(b.pid), "--every", "0.01", "--count", "3")
    assert out.exit_code == 0, out.stderr
    assert f"pid {b.pid} exited; stopped watching it (1 snapshot kept)" in out.stderr
    assert len(snapshots(sqlite_cli)) == 4


@pytest.mark.live
def test_sigterm_ends_a_watch_like_ctrl_c(sqlite_url: str, target: Target) -> None:
    target.send("pages 3000")
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memsnap",
            "--db",
            sqlite_url,
            "record",
            str(target.pid),
            "--every",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    announced = [watch.stdout.readline() for _ in range(3)]
    watch.send_signal(signal.SIGTERM)
    out, err = watch.communicate(timeout=30)
    announced += out.splitlines()
    assert watch.returncode == 143, err
    assert err.startswith("memsnap: terminated: ") and "finished snapshots kept" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    kept = snapshots(Cli(sqlite_url))
    # SIGTERM may land between a snapshot's commit and its line: one more may be kept.
    assert len(announced) <= len(kept) <= len(announced) + 1
    assert f"{len(kept)} finished" in err
    assert {s["totals"]["regions"] for s in kept} == {region_count(target.pid)}


# --- the ELF layout cache -------------------------------------------------------------


@pytest.mark.live
def test_layout_cache_stays_bounded_over_many_rounds(
    target_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch of a machine whose programs come and go: every round brings objects never
    seen before (hard links of one ELF file: each path is a new object to the cache).
    The cache keeps at most LAYOUT_CACHE_SIZE, and one mapped every round stays in it."""
    from memsnap.capture import record
    from memsnap.model import Mapping

    monkeypatch.setattr(record, "LAYOUT_CACHE_SIZE", 40)
    monkeypatch.setattr(record, "_LAYOUT_CACHE", type(record._LAYOUT_CACHE)())
    reads: list[str] = []
    real = record.read_load_layout

    def counted(path: str | Path) -> Any:
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(record, "read_load_layout", counted)
    inode = target_binary.stat().st_ino

    def mapping(path: Path) -> Mapping:
        return Mapping(0x1000, 0x2000, "r-xp", 0, "00:00", inode, str(path))

    everyday = tmp_path / "everyday"
    os.link(target_binary, everyday)
    for round_ in range(25):
        layout = record.layouts_from_files(None, None)
        assert layout(mapping(everyday)) is not None
        for n in range(10):
            fresh = tmp_path / f"r{round_}-{n}"
            os.link(target_binary, fresh)
            assert layout(mapping(fresh)) is not None
        assert len(record._LAYOUT_CACHE) <= 40
    assert reads.count(str(everyday)) == 1  # used every round: never forgotten
    assert len(reads) == 1 + 25 * 10


# --- names of live processes ----------------------------------------------------------


@pytest.mark.live
def test_a_rewritten_title_has_no_padding_arguments(target_binary: Path, sqlite_cli: Cli) -> None:
    """A process that rewrites its title in place, as PostgreSQL's backends do, leaves
    the rest of its argument area as NUL bytes: that padding is not arguments."""
    t = Target(target_binary, ("--an-argument-area-long-enough", "x" * 60, "y" * 20))
    try:
        title = "postgres: 15/main: background writer"
        t.send(f"title {title}")
        raw = read_bytes(f"/proc/{t.pid}/cmdline")
        assert raw.startswith(title.encode() + b"\0\0\0\0\0")  # the kernel shows the padding
        out = sqlite_cli("record", str(t.pid))
        assert out.exit_code == 0, out.stderr
        (snap,) = snapshots(sqlite_cli)
        assert snap["cmdline"] == [title]
    finally:
        t.stop()


@pytest.mark.live
def test_a_name_ending_in_deleted_is_not_a_deleted_file(
    target: Target, sqlite_cli: Cli, tmp_path: Path
) -> None:
    named = tmp_path / "a b (deleted)"
    named.write_bytes(b"\0" * 4096)
    at = target.address(f"map {named}")
    gone = target.address(f"deleted {tmp_path}")  # really deleted
    out = sqlite_cli("record", str(target.pid))
    assert out.exit_code == 0, out.stderr
    (snap,) = snapshots(sqlite_cli)
    shown = sqlite_cli("show", str(snap["id"]), "--format", "json")
    regions = {int(r["start"], 16): r for r in json.loads(shown.stdout)["regions"]}
    assert (regions[at]["path"], regions[at]["deleted"]) == (str(named), False)
    assert (regions[gone]["path"], regions[gone]["deleted"]) == (f"{tmp_path}/gone.bin", True)


# --- permission denied ----------------------------------------------------------------


def test_denied_message_says_what_is_known() -> None:
    everything = (1 << 41) - 1
    not_root = denied_message(7, 1000, None, None)
    assert not_root == (
        "pid 7: permission denied (reading another user's process needs root or ptrace rights)"
    )
    no_ptrace = denied_message(7, 0, everything & ~(1 << 19), "0 0 4294967295\n")
    assert "without the CAP_SYS_PTRACE capability" in no_ptrace and "needs root" not in no_ptrace
    userns = denied_message(7, 0, everything, "         0       1000          1\n")
    assert "root of a user namespace (uid_map 0 1000 1)" in userns
    other = denied_message(7, 0, everything, "         0          0 4294967295\n")
    assert "runs as root with CAP_SYS_PTRACE" in other and "needs root" not in other
    for message in (not_root, no_ptrace, userns, other):
        assert message.startswith("pid 7: permission denied") and "\n" not in message


# --- show PID --live, diff ID --live --------------------------------------------------


@pytest.mark.live
def test_show_live_equals_record_then_show(target: Target, cli: Cli, tmp_path: Path) -> None:
    target.send("dlopen libz.so.1")
    target.address("anon 7340032")
    target.address(f"deleted {tmp_path}")
    target.send("thread")
    live = cli("show", str(target.pid), "--live", "--format", "json")
    assert live.exit_code == 0, live.stderr
    done = cli("record", str(target.pid))
    assert done.exit_code == 0, done.stderr
    snapshot_id = done.stdout.split()[1].rstrip(":")
    stored = json.loads(cli("show", snapshot_id, "--format", "json").stdout)
    doc = json.loads(live.stdout)
    assert doc["snapshot"]["id"] is None and doc["snapshot"]["source"] == "live"
    assert doc["snapshot"]["pid"] == target.pid
    assert doc["snapshot"]["totals"]["regions"] == stored["snapshot"]["totals"]["regions"]
    # The same regions with the same fields; rss and pss may move between two reads.
    moving = {
        "rss", "pss", "uss", "shared_clean", "shared_dirty", "private_clean", "private_dirty",
        "referenced", "anonymous", "anon_huge", "swap", "swap_pss", "locked",
    }  # fmt: skip

    def fixed(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in moving}

    assert [fixed(r) for r in doc["regions"]] == [fixed(r) for r in stored["regions"]]
    assert [set(r) for r in doc["regions"]] == [set(r) for r in stored["regions"]]
    assert len(snapshots(cli)) == 1  # --live stored nothing
    table = cli("show", str(target.pid), "--live")
    assert table.stdout.startswith(f"live: pid {target.pid} (target)"), table.stdout


@pytest.mark.live
def test_show_live_of_no_process_is_exit_1(cli: Cli) -> None:
    dead = free_pid()
    out = cli("show", str(dead), "--live")
    assert out.exit_code == 1 and f"pid {dead}: no such process" in out.stderr


@pytest.mark.live
def test_diff_live_reports_a_layout_change(target: Target, cli: Cli) -> None:
    done = cli("record", str(target.pid))
    snapshot_id = done.stdout.split()[1].rstrip(":")
    unchanged = json.loads(cli("diff", snapshot_id, "--live", "--format", "json").stdout)
    assert unchanged["match"] == "address" and unchanged["to"]["id"] is None
    assert unchanged["regions"]["added"] == [] and unchanged["regions"]["removed"] == []
    at = target.address("anon 7340032")
    out = cli("diff", snapshot_id, "--live", "--format", "json")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(out.stdout)
    # The kernel may merge the new mapping with an anonymous neighbour: then it shows as
    # that region changed rather than a region added.
    after = doc["regions"]["added"] + [c["after"] for c in doc["regions"]["changed"]]
    assert any(int(r["start"], 16) <= at < int(r["end"], 16) for r in after)
    assert doc["kinds"]["anon"]["delta"]["size"] == 7340032
    assert len(snapshots(cli)) == 1
    table = cli("diff", snapshot_id, "--live")
    assert table.exit_code == 0 and "7.0 MiB" in table.stdout
    assert f"diff {snapshot_id} -> live:" in table.stdout
    assert cli("diff", snapshot_id).exit_code == 2
