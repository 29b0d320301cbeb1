"""`record --all` and `--name` on this machine's real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from conftest import Cli, Target
from fakeproc import FakeProc, FakeProcess, FakeProcTree
from memsnap.capture.procfs import PF_KTHREAD
from memsnap.store.database import Database

NAME = "msnaptest-sleep"  # 15 characters: the kernel keeps a command name that long


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[int]]:
    """Three processes of our own with a name nothing else on the machine has."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    program = tmp_path / NAME
    shutil.copy(sleep, program)
    procs = [subprocess.Popen([str(program), "60"]) for _ in range(3)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def recorded_pids(cli: Cli) -> list[int]:
    snaps = json.loads(cli("list", "--format", "json").stdout)["snapshots"]
    return [s["pid"] for s in snaps]


@pytest.mark.live
def test_record_all_records_our_children_and_counts_skips(
    sqlite_cli: Cli, children: list[int]
) -> None:
    out = sqlite_cli("record", "--all")
    assert out.exit_code == 0, out.stderr
    pids = recorded_pids(sqlite_cli)
    assert set(children) <= set(pids)
    assert len(pids) == len(set(pids))  # one snapshot each
    summary = out.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"memsnap: recorded {len(pids)} processes")
    if Path("/proc/2/comm").exists() and Path("/proc/2/comm").read_text().strip() == "kthreadd":
        assert "(kernel threads)" in summary


@pytest.mark.live
def test_name_selects_by_regex(sqlite_cli: Cli, children: list[int]) -> None:
    out = sqlite_cli("record", "--all", "--name", f"^{NAME}$")
    assert out.exit_code == 0, out.stderr
    assert sorted(recorded_pids(sqlite_cli)) == sorted(children)
    explicit = sqlite_cli("record", str(children[0]), "1", "--name", "^msnaptest")
    assert explicit.exit_code == 0  # pid 1 is not selected, so not even tried
    assert recorded_pids(sqlite_cli).count(children[0]) == 2


@pytest.mark.live
def test_all_watch_rounds(sqlite_cli: Cli, children: list[int]) -> None:
    out = sqlite_cli("record", "--all", "--name", f"^{NAME}$", "--every", "0.1", "--count", "2")
    assert out.exit_code == 0, out.stderr
    assert sorted(recorded_pids(sqlite_cli)) == sorted(children * 2)
    assert out.stderr.count("recorded 3 processes") == 2


def test_all_and_pids_together_is_a_usage_error(sqlite_cli: Cli) -> None:
    out = sqlite_cli("record", "--all", "1")
    assert out.exit_code == 2 and "--all" in out.stderr


@pytest.mark.live
def test_a_round_looks_for_unchanged_copies_only_of_processes_seen_before(
    sqlite_cli: Cli, children: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`record --all` asks once who was recorded before; a process never seen costs no
    transaction looking for an unchanged copy, one seen before still gets the shortcut."""
    import memsnap.capture.procfs
    import memsnap.capture.record
    import memsnap.model
    import memsnap.store.writer

    looked_for: list[int] = []
    real = memsnap.store.writer.save_unchanged

    def spy(conn: Connection, info: memsnap.model.SnapshotInfo, *rest: Any) -> object:
        looked_for.append(info.identity.pid)
        return real(conn, info, *rest)

    real_quick = memsnap.capture.procfs.Proc.quick

    def quick_spy(proc: memsnap.capture.procfs.Proc, pid: int, *rest: Any, **kw: Any) -> Any:
        looked_for.append(pid)
        return real_quick(proc, pid, *rest, **kw)

    # Looking for a copy starts with the quick signal (Proc.quick), then a transaction
    # (save_unchanged) only where the stored signal or digest may match.
    monkeypatch.setattr(memsnap.store.writer, "save_unchanged", spy)
    monkeypatch.setattr(memsnap.capture.procfs.Proc, "quick", quick_spy)
    selected = ["--name", f"^{NAME}$"]
    assert sqlite_cli("record", "--all", *selected).exit_code == 0
    assert looked_for == []
    assert sqlite_cli("record", "--all", *selected).exit_code == 0
    assert sorted(set(looked_for)) == sorted(children)
    assert sorted(recorded_pids(sqlite_cli)) == sorted(children * 2)


@pytest.fixture
def own_children(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """Three processes named for this test alone: other test runs on the machine may
    have `children` of their own."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    name = f"ms{uuid.uuid4().hex[:13]}"  # 15 characters: kept whole as the command
    program = tmp_path / name
    shutil.copy(sleep, program)
    procs = [subprocess.Popen([str(program), "60"]) for _ in range(3)]
    yield name, [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def test_name_without_all_records_every_match(
    sqlite_cli: Cli, own_children: tuple[str, list[int]]
) -> None:
    name, children = own_children
    out = sqlite_cli("record", "--name", f"^{name}$")
    assert out.exit_code == 0, out.stderr
    assert sorted(recorded_pids(sqlite_cli)) == sorted(children)


def test_name_reads_each_process_once(
    sqlite_cli: Cli, own_children: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matching a name needs comm, cmdline, stat and exe; the capture starts from them
    instead of reading them again."""
    from collections import Counter

    from memsnap.capture.procfs import Proc, ProcessInfo

    reads: Counter[int] = Counter()
    real = Proc.info

    def counted(self: Proc, pid: int, *rest: Any) -> ProcessInfo:
        reads[pid] += 1
        return real(self, pid, *rest)

    monkeypatch.setattr(Proc, "info", counted)
    name, children = own_children
    out = sqlite_cli("record", "--all", "--name", f"^{name}$")
    assert out.exit_code == 0, out.stderr
    assert sorted(recorded_pids(sqlite_cli)) == sorted(children)
    assert [reads[pid] for pid in children] == [1, 1, 1]
    assert set(reads.values()) == {1}


KTHREAD_PID, USER_PID = 77, 4242


@pytest.fixture
def with_kthread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProc:
    """A fake /proc of one user process and one kernel thread (flagged PF_KTHREAD, no map,
    no command line, no program), which `memsnap record` reads instead of /proc."""
    import memsnap.capture.procfs

    proc = FakeProc(FakeProcTree(tmp_path / "proc"))
    proc.tree.add(FakeProcess(USER_PID))
    kthread = FakeProcess(KTHREAD_PID, comm="kworker/0:1", cmdline=(), maps="", smaps="")
    proc.tree.add(replace(kthread, flags=PF_KTHREAD | 0x40, vsize=0, space=(0, 0, 0)))
    monkeypatch.setattr(memsnap.capture.procfs, "Proc", lambda host=None: proc)
    return proc


def test_a_kernel_thread_is_passed_over_after_reading_its_stat(
    sqlite_cli: Cli, with_kthread: FakeProc
) -> None:
    """Most pids of a quiet machine are kernel threads: a watch round tells them by their
    stat's flags alone, and counts them as their empty map would."""
    with_kthread.tree.remove(USER_PID)
    out = sqlite_cli("record", "--all")
    assert out.exit_code == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "memsnap: recorded 0 processes, skipped 1 (kernel threads)"
    )
    assert with_kthread.opened == ["stat"]


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("^kworker", "recorded 0 processes, skipped 1 (kernel threads)"),
        ("^prog$", "recorded 1 process"),
        ("^nothing$", "recorded 0 processes"),
    ],
)
def test_name_counts_a_kernel_thread_only_when_it_matches(
    sqlite_cli: Cli, with_kthread: FakeProc, name: str, summary: str
) -> None:
    out = sqlite_cli("record", "--all", "--name", name)
    assert out.exit_code == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"memsnap: {summary}"
    assert [
        s["pid"] for s in json.loads(sqlite_cli("list", "--format", "json").stdout)["snapshots"]
    ] == ([USER_PID] if name == "^prog$" else [])


def test_a_watch_hides_what_lived_before_it_from_each_collection() -> None:
    """The collection after each round walks only what rounds made: what was alive
    before the first (imported modules, the engine) is frozen, and unfrozen at the end."""
    import gc

    from memsnap.capture.watch import every

    frozen: list[int] = []

    def round_(_number: int) -> bool:
        frozen.append(gc.get_freeze_count())
        return True

    assert every(0.001, 3, round_) == 3
    assert len(frozen) == 3 and min(frozen) > 1000
    assert gc.get_freeze_count() == 0


def test_who_was_recorded_before_is_read_through_each_process_latest_snapshot(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch asks every round which processes it recorded before, with each one's
    latest digest: the answer is each process's latest snapshot, and the query reaches
    it through the (process, seq) index instead of going over every snapshot stored (a
    cost that would grow with every round of a long watch)."""
    from sqlalchemy import event

    from memsnap.capture.record import record_pid
    from memsnap.store.database import open_database
    from memsnap.store.writer import recorded_processes

    monkeypatch.setenv("MEMSNAP_QUICK", "0")  # the fake tree has no smaps_rollup
    proc = FakeProc(FakeProcTree(tmp_path / "proc"))
    proc.tree.add(FakeProcess(USER_PID))
    proc.tree.add(FakeProcess(USER_PID + 1, start_ticks=999))
    db = open_database(sqlite_url)
    try:
        for n in range(3):
            for pid in (USER_PID, USER_PID + 1):
                record_pid(db, proc, pid)
            # One process runs another program each time: its snapshots' digests differ.
            proc.tree.change(USER_PID, exe=f"/usr/bin/prog{n}")
        asked: list[tuple[str, Any]] = []

        def spy(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
            asked.append((statement, params))

        with db.reading() as conn:
            event.listen(conn, "before_cursor_execute", spy)
            found = recorded_processes(conn, proc.host, proc.boot_id, [USER_PID, USER_PID + 1])
            event.remove(conn, "before_cursor_execute", spy)
            # Asked about one pid, only its processes: a round asks about the pids alive
            # then, not about every process recorded since boot.
            one = recorded_processes(conn, proc.host, proc.boot_id, [USER_PID + 1, 4_000_000])
            # Past the first chunks of 500 pids asked about, found alike.
            many = recorded_processes(
                conn, proc.host, proc.boot_id, [*range(3000, USER_PID + 2), *range(1, 1200)]
            )
            rows = conn.exec_driver_sql(
                "SELECT p.pid, p.start_ticks, s.seq, s.digest FROM processes p "
                "JOIN snapshots s ON s.process_id = p.id"
            ).all()
            [(statement, params)] = [q for q in asked if "snapshots" in q[0]]
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
    finally:
        db.close()
    latest: dict[tuple[int, int | None], tuple[int, str | None]] = {}
    for pid, ticks, seq, digest in rows:
        if (pid, ticks) not in latest or seq > latest[pid, ticks][0]:
            latest[pid, ticks] = (seq, digest)
    assert found == {key: digest for key, (_, digest) in latest.items()}
    assert one == {key: digest for key, digest in found.items() if key[0] == USER_PID + 1}
    assert many == found
    assert len(one) == 1
    assert len(set(found.values())) == 2 and None not in found.values()
    scans = [row[-1] for row in plan if str(row[-1]).startswith("SCAN")]
    assert not any("snapshots" in scan for scan in scans), plan


def test_a_connection_remembers_a_bounded_number_of_path_ids(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch keeps one connection for weeks while programs come and go, each with
    paths of its own: what the connection remembers of them stays bounded, and a path
    forgotten is looked up again under its own id."""
    from memsnap.store import writer

    monkeypatch.setattr(writer, "_PATHS_REMEMBERED", 50)
    per_round = 40
    remembered: list[int] = []
    for round_ in range(6):
        texts = [f"/opt/program-{round_}/lib{i}.so" for i in range(per_round)]
        with db.writing() as conn:
            ids = writer.intern_paths(conn, texts)  # new: inserted, not remembered yet
        with db.writing() as conn:
            assert writer.intern_paths(conn, texts) == ids  # found, and remembered
            remembered.append(len(conn.info["memsnap.path_ids"]))
    # Without a bound it would hold every round's paths (240 here).
    assert max(remembered) <= 50 + per_round
    assert remembered[-1] < per_round * 6


@pytest.mark.live
def test_region_inserts_are_the_same_statements_for_every_snapshot(
    db: Database, target: Target
) -> None:
    """The driver keeps each distinct statement prepared (SQLite: half a MiB for an
    INSERT of 200 regions): a watch's snapshots must not each bring a text of their own."""
    from sqlalchemy import event

    from memsnap.capture.procfs import Proc
    from memsnap.capture.record import record_pid

    texts: set[str] = set()

    def spy(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith("INSERT INTO regions"):
            texts.add(statement)

    event.listen(db.engine, "before_cursor_execute", spy)
    try:
        proc = Proc()
        for _ in range(3):
            target.send("pages 450")  # 450 new regions: two whole INSERTs and the rest
            record_pid(db, proc, target.pid)
    finally:
        event.remove(db.engine, "before_cursor_execute", spy)
    assert len(texts) == 2  # 200 rows a statement, and one row a statement
