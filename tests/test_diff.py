"""Diffs, time travel, replay and watch, driven by live processes."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target, fixture_text
from memsnap.capture.procfs import read_file
from memsnap.parse import parse_text
from memsnap.units import signed_human

MiB = 1 << 20


def record(cli: Cli, pid: int, *extra: str) -> int:
    done = cli("record", str(pid), *extra)
    assert done.exit_code == 0, done.stderr
    return int(done.stdout.split()[1].rstrip(":"))


def diff(cli: Cli, a: int, b: int) -> Any:
    out = cli("diff", str(a), str(b), "--format", "json")
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)  # a JSON document: its shape is what the tests check


def kernel_size(pid: int, name: str) -> int:
    maps = parse_text(read_file(f"/proc/{pid}/maps")).mappings
    return sum(m.size for m in maps if m.path == name)


def close_to(measured: int, expected: int, share: float = 0.05) -> bool:
    return abs(measured - expected) <= share * expected


@pytest.mark.live
def test_a_process_changing_over_time(cli: Cli, target: Target) -> None:
    s0 = record(cli, target.pid)
    heap0, stack0 = kernel_size(target.pid, "[heap]"), kernel_size(target.pid, "[stack]")
    target.send("dlopen libz.so.1")
    target.send("heap 31457280")
    target.send("stack 1572864")
    anon = target.address("anon 7340032")
    rwx = target.address("rwx")
    s1 = record(cli, target.pid)
    heap1, stack1 = kernel_size(target.pid, "[heap]"), kernel_size(target.pid, "[stack]")
    target.send("dlclose")
    s2 = record(cli, target.pid)

    d = diff(cli, s0, s1)
    assert d["match"] == "address" and d["format"] == 1
    assert [Path(p).name for p in d["libraries"]["loaded"]] == ["libz.so.1.2.13"]
    assert d["libraries"]["unloaded"] == []
    heap = d["heap"]["delta"]
    assert heap["size"] == heap1 - heap0 and close_to(heap["size"], 30 * MiB)
    assert close_to(heap["rss"], 30 * MiB)
    stack = d["stack"]["delta"]
    assert stack["size"] == stack1 - stack0 and close_to(stack["size"], 1572864, 0.1)
    assert close_to(d["kinds"]["anon"]["delta"]["size"], 7 * MiB)
    assert close_to(d["kinds"]["anon"]["delta"]["rss"], 7 * MiB)
    wx = d["callouts"]["writable_executable"]
    assert [int(r["start"], 16) for r in wx] == [rwx]
    new_x = {r["kind"] for r in d["callouts"]["new_executable"]}
    assert new_x == {"anon", "lib-text"}
    added = d["regions"]["added"]
    assert any(int(r["start"], 16) <= anon < int(r["end"], 16) for r in added) or any(
        int(c["after"]["start"], 16) <= anon < int(c["after"]["end"], 16)
        for c in d["regions"]["changed"]
    )
    heap_change = [c for c in d["regions"]["changed"] if c["after"]["kind"] == "heap"]
    assert heap_change[0]["changes"][:2] == ["size", "end"]
    stack_change = [c for c in d["regions"]["changed"] if c["after"]["kind"] == "stack"]
    assert "start" in stack_change[0]["changes"] and "end" not in stack_change[0]["changes"]

    d2 = diff(cli, s1, s2)
    assert [Path(p).name for p in d2["libraries"]["unloaded"]] == ["libz.so.1.2.13"]
    assert d2["libraries"]["loaded"] == [] and d2["heap"]["delta"]["size"] == 0
    removed = d2["regions"]["removed"]
    assert {r["kind"] for r in removed} <= {"lib-text", "lib-rodata", "lib-data", "lib-bss"}
    assert d2["callouts"]["new_executable"] == []

    table = cli("diff", str(s0), str(s1)).stdout
    (libz,) = d["libraries"]["loaded"]
    # The path as the JSON names it, on a line of its own under the count.
    assert f"libraries: 1 loaded, 0 unloaded\n  + {libz}\n" in table
    assert "+30.0 MiB" in table and "! writable and executable" in table
    backwards = diff(cli, s1, s0)
    assert backwards["heap"]["delta"]["size"] == -heap["size"]
    assert [Path(p).name for p in backwards["libraries"]["unloaded"]] == ["libz.so.1.2.13"]


def test_mprotect_adding_x_is_called_out(sqlite_cli: Cli, tmp_path: Path) -> None:
    lines = fixture_text(
        "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"
    ).split("\n")
    changed = [
        ln.replace("7fde873b8000-7fde873ba000 rw-p", "7fde873b8000-7fde873ba000 r-xp")
        for ln in lines
    ]
    # Two imports are two processes: matched by identity, so paths/offsets pair up.
    a = sqlite_cli("record", "--from-file", "-", "--pid", "1", input="\n".join(lines))
    b = sqlite_cli("record", "--from-file", "-", "--pid", "1", input="\n".join(changed))
    assert a.exit_code == b.exit_code == 0
    d = diff(sqlite_cli, 1, 2)
    assert d["match"] == "identity"
    made = d["callouts"]["made_executable"]
    assert [(m["before"]["perms"], m["after"]["perms"]) for m in made] == [("rw-p", "r-xp")]


@pytest.mark.live
def test_two_runs_of_one_program_match_by_identity(cli: Cli, target_binary: Path) -> None:
    one, two = Target(target_binary), Target(target_binary)
    try:
        two.send("dlopen libz.so.1")
        a, b = record(cli, one.pid), record(cli, two.pid)
    finally:
        one.stop()
        two.stop()
    d = diff(cli, a, b)
    assert d["match"] == "identity"
    assert [Path(p).name for p in d["libraries"]["loaded"]] == ["libz.so.1.2.13"]
    assert d["libraries"]["unloaded"] == []
    moved = d["regions"]
    for side in ("added", "removed"):
        paths = {r["path"] for r in moved[side] if r["path"]}
        assert all("libz" in p for p in paths), (side, paths)
    for c in moved["changed"]:
        assert "start" not in c["changes"] and "end" not in c["changes"]
        assert not (c["after"]["path"] or "").endswith(("libc.so.6", "/target")) or set(
            c["changes"]
        ) <= {"rss", "pss", "size", "swap"}
    # Pairing reads only some columns; what the diff reports is each region whole, as
    # `show` prints it.
    shown = {
        s: {
            r["start"]: r
            for r in json.loads(cli("show", str(s), "--format", "json").stdout)["regions"]
        }
        for s in (a, b)
    }
    assert moved["added"]
    for r in moved["added"]:
        assert r == shown[b][r["start"]]
    for r in moved["removed"]:
        assert r == shown[a][r["start"]]
    for c in moved["changed"]:
        assert c["before"] == shown[a][c["before"]["start"]]
        assert c["after"] == shown[b][c["after"]["start"]]


@pytest.mark.live
def test_show_at_spellings_and_errors(sqlite_cli: Cli, plain_target: Target) -> None:
    target = plain_target
    first = record(sqlite_cli, target.pid)
    time.sleep(1.1)
    middle = datetime.now(timezone.utc)
    time.sleep(1.1)
    second = record(sqlite_cli, target.pid)

    def at(when: str, *extra: str) -> int:
        out = sqlite_cli("show", "--at", when, *extra, "--format", "json")
        assert out.exit_code == 0, out.stderr
        return int(json.loads(out.stdout)["snapshot"]["id"])

    local = middle.astimezone().replace(tzinfo=None)
    assert at(middle.isoformat()) == first
    assert at(local.isoformat(sep=" ", timespec="seconds")) == first  # no offset: local
    assert at(str(int(middle.timestamp()))) == first
    assert at("now") == second
    assert at("0s ago", "--pid", str(target.pid)) == second
    assert at("2 sec ago") == first  # second was taken 2.2 s after first
    late = sqlite_cli("show", "--at", "10m ago")
    assert late.exit_code == 1 and "nothing recorded" in late.stderr
    bad = sqlite_cli("show", "--at", "ten past")
    assert bad.exit_code == 2
    other = subprocess.Popen(["sleep", "30"])
    try:
        record(sqlite_cli, other.pid)
    finally:
        other.kill()
        other.wait()
    several = sqlite_cli("show", "--at", "now")
    assert several.exit_code == 1
    assert str(target.pid) in several.stderr and str(other.pid) in several.stderr
    name = Path(f"/proc/{target.pid}/comm").read_text().strip()
    assert at("now", "--name", f"^{re.escape(name)}$") == second


def holds(regions: list[Any], address: int, size: int) -> bool:
    """Whether one of the JSON `regions` covers [address, address + size)."""
    return any(
        int(r["start"], 16) <= address and address + size <= int(r["end"], 16) for r in regions
    )


@pytest.mark.live
def test_replay(sqlite_cli: Cli, plain_target: Target) -> None:
    target = plain_target
    ids = [record(sqlite_cli, target.pid)]
    anon = target.address("anon 10485760")
    ids.append(record(sqlite_cli, target.pid))
    target.send("dlopen libz.so.1")
    ids.append(record(sqlite_cli, target.pid))
    out = sqlite_cli("replay", "--pid", str(target.pid), "--format", "json")
    steps = json.loads(out.stdout)["steps"]
    assert [s["snapshot"]["id"] for s in steps] == ids
    assert steps[0]["diff"] is None
    # The new 10 MiB is a region of its own, or grew one the kernel merged it with.
    grown = steps[1]["diff"]["regions"]
    assert holds(grown["added"], anon, 10 * MiB) or (
        holds([c["after"] for c in grown["changed"]], anon, 10 * MiB)
        and not holds([c["before"] for c in grown["changed"]], anon, 10 * MiB)
    )
    assert steps[2]["diff"]["libraries"]["loaded"][0].endswith("libz.so.1.2.13")
    assert steps[1]["diff"]["libraries"]["loaded"] == []
    table = sqlite_cli("replay", "--pid", str(target.pid)).stdout
    # The table's change column is the JSON's, whatever else the interpreter allocated.
    grew = steps[1]["diff"]["totals"]["delta"]["size"]
    assert grew >= 10 * MiB and f"  {signed_human(grew)}  " in table
    assert any(line.strip().startswith("3: + ") and "libz.so" in line for line in table.split("\n"))
    since = sqlite_cli("replay", "--pid", str(target.pid), "--since", "now")
    assert since.exit_code == 1 and "no snapshots" in since.stderr


def _memsnap(db: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "memsnap", "--db", db, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _complete(cli: Cli) -> list[dict[str, object]]:
    """Every snapshot, checked to hold exactly as many regions as its totals say."""
    snaps = json.loads(cli("list", "--format", "json").stdout)["snapshots"]
    for s in snaps:
        shown = json.loads(cli("show", str(s["id"]), "--format", "json").stdout)
        assert len(shown["regions"]) == s["totals"]["regions"] > 0
    return list(snaps)


@pytest.mark.live
def test_watch_until_the_process_exits(sqlite_url: str, plain_target: Target) -> None:
    target = plain_target
    watcher = _memsnap(sqlite_url, "record", str(target.pid), "--every", "0.1")
    assert watcher.stdout is not None
    # The process exits once three snapshots are announced (not after a fixed time: a
    # busy machine may take longer to start memsnap).
    announced = [watcher.stdout.readline() for _ in range(3)]
    target.stop()
    out, err = watcher.communicate(timeout=30)
    announced += out.splitlines()
    assert watcher.returncode == 0, err
    assert f"pid {target.pid} exited; stopped watching it ({len(announced)} snapshots" in err
    kept = _complete(Cli(sqlite_url))
    assert len(kept) == len(announced) >= 3


@pytest.mark.live
def test_watch_interrupted_keeps_every_finished_snapshot(
    sqlite_url: str, plain_target: Target
) -> None:
    target = plain_target
    target.send("pages 3000")  # a bigger process: a snapshot takes long enough to hit
    watcher = _memsnap(sqlite_url, "record", str(target.pid), "--every", "0.05")
    assert watcher.stdout is not None
    # Interrupted once two snapshots are announced (not after a fixed time: a busy
    # machine may take longer to start memsnap), at a random point of a later one.
    first = [watcher.stdout.readline() for _ in range(2)]
    time.sleep(random.uniform(0, 0.5))
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    kept = _complete(Cli(sqlite_url))
    announced = len(first) + len(out.splitlines())
    # Every announced snapshot is kept, complete; Ctrl-C may land between a snapshot's
    # commit and its line, so one more may be kept (complete too) than was announced.
    assert announced >= 2 and announced <= len(kept) <= announced + 1


@pytest.mark.live
def test_watch_count(sqlite_cli: Cli, plain_target: Target) -> None:
    out = sqlite_cli("record", str(plain_target.pid), "--every", "0.1", "--count", "3")
    assert out.exit_code == 0 and len(out.stdout.splitlines()) == 3


def test_a_watch_collects_cycles_between_rounds() -> None:
    """Commands run with the cycle collector off; a watch that runs for days must still
    reclaim what a round left in reference cycles."""
    import gc
    import weakref

    from memsnap.capture.watch import every

    class Node:
        other: object = None

    left: list[weakref.ref[Node]] = []

    def round_(number: int) -> bool:
        if number == 1:
            a, b = Node(), Node()
            a.other, b.other = b, a  # only the cycle collector can free these
            left.append(weakref.ref(a))
            return True
        return left[0]() is None

    was = gc.isenabled()
    gc.disable()
    try:
        assert every(0.001, 2, round_) == 2
        assert left[0]() is None
    finally:
        if was:
            gc.enable()


@pytest.mark.live
@pytest.mark.parametrize(
    "args",
    [
        ["--every", "0"],
        ["--every", "-1"],
        ["--every", "1e12"],
        ["--every", "1", "--count", "0"],
        ["--count", "2"],
    ],
)
def test_watch_usage_errors(sqlite_cli: Cli, args: list[str]) -> None:
    out = sqlite_cli("record", str(os.getpid()), *args)
    assert out.exit_code == 2 and out.stdout == ""


@pytest.mark.live
def test_storage_grows_with_change_not_time(tmp_path: Path, plain_target: Target) -> None:
    """Recording an unchanged 20,000-mapping process 30 more times costs less than its
    first snapshot did."""
    from memsnap.capture.procfs import Proc
    from memsnap.capture.record import record_pid
    from memsnap.store.database import open_database

    path = tmp_path / "growth.db"
    target = plain_target
    target.send("pages 20000")
    db = open_database(str(path))

    def size() -> int:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return path.stat().st_size

    try:
        empty = size()
        proc = Proc()
        record_pid(db, proc, target.pid)
        first = size() - empty
        for _ in range(30):
            record_pid(db, proc, target.pid)
        growth = size() - empty - first
    finally:
        db.close()
    print(f"first snapshot {first} bytes; 30 more: {growth} bytes; ratio {growth / first:.4f}")
    assert growth < first
