"""`memsnap prune` on SQLite and PostgreSQL: real recordings of live processes, their
times then rewritten in the database so the policy's periods are known; what stays must
read back exactly as before, and a prune killed halfway loses nothing it should keep."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import and_, func, select, update

from conftest import Cli, Target
from memsnap.store.database import open_database
from memsnap.store.schema import paths, processes, regions, snapshots

# The times given to a process's ten snapshots (UTC; the tests run with TZ=UTC so that
# the local periods prune counts in are these hours).
TIMES = [
    "2026-03-02 00:10",
    "2026-03-02 00:40",
    "2026-03-02 01:05",
    "2026-03-02 01:50",
    "2026-03-02 02:30",
    "2026-03-02 05:00",
    "2026-03-02 05:20",
    "2026-03-02 05:59",
    "2026-03-02 09:00",
    "2026-03-02 09:30",
]
# --keep-hourly 3 keeps the newest of hours 9, 5 and 2 (seqs 10, 8, 5), plus the first.
HOURLY_3 = [1, 5, 8, 10]


@pytest.fixture(autouse=True)
def utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def record(cli: Cli, pid: int) -> None:
    out = cli("record", str(pid))
    assert out.exit_code == 0, out.stderr


def record_history(cli: Cli, target: Target, tmp: Path) -> None:
    """Ten snapshots of a live process, its layout changed between most of them: libz is
    mapped only at seqs 3-4, an anonymous area at 2-5, a memfd and a deleted file from
    7 and 8 on."""
    steps = [
        None,
        "anon 1048576",
        "dlopen libz.so.1",
        "heap 65536",
        "dlclose",
        "unmap-anon",
        "memfd",
        f"deleted {tmp}",
        "stack 200000",
        None,
    ]
    for step in steps:
        if step is not None:
            target.send(step)
        record(cli, target.pid)


def set_times(url: str, pid: int, times: list[str]) -> None:
    db = open_database(url)
    try:
        with db.writing() as conn:
            row = conn.execute(select(processes.c.id).where(processes.c.pid == pid)).scalar_one()
            for seq, text in enumerate(times, start=1):
                when = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
                conn.execute(
                    update(snapshots)
                    .where(and_(snapshots.c.process_id == row, snapshots.c.seq == seq))
                    .values(taken_at=when)
                )
    finally:
        db.close()


def listed(cli: Cli, *args: str) -> list[dict[str, Any]]:
    out = cli("list", "--format", "json", *args)
    assert out.exit_code == 0, out.stderr
    return list(json.loads(out.stdout)["snapshots"])


def seqs_of(cli: Cli, pid: int) -> list[int]:
    return sorted(s["seq"] for s in listed(cli, "--pid", str(pid)))


def ids_by_seq(cli: Cli, pid: int) -> dict[int, int]:
    return {s["seq"]: s["id"] for s in listed(cli, "--pid", str(pid))}


def json_of(cli: Cli, *args: str) -> Any:
    out = cli(*args, "--format", "json")
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def reading_of(cli: Cli, pid: int, keep: list[int]) -> dict[str, Any]:
    """What `show`, `diff` (each kept snapshot against the next, the first against the
    last and back) and `replay` say of the
    snapshots `keep` names; the replay as it will be once only those are left."""
    ids = ids_by_seq(cli, pid)
    kept = [ids[s] for s in keep]
    shows = {i: json_of(cli, "show", str(i)) for i in kept}
    pairs = [*itertools.pairwise(kept), (kept[0], kept[-1]), (kept[-1], kept[0])]
    diffs = {(a, b): json_of(cli, "diff", str(a), str(b)) for a, b in pairs}
    steps = [{"snapshot": shows[kept[0]]["snapshot"], "diff": None}]
    for a, b in itertools.pairwise(kept):
        step_diff = dict(diffs[(a, b)])
        del step_diff["format"]
        steps.append({"snapshot": shows[b]["snapshot"], "diff": step_diff})
    return {"show": shows, "diff": diffs, "replay": {"format": 1, "steps": steps}}


def path_texts(url: str) -> set[str]:
    db = open_database(url)
    try:
        with db.reading() as conn:
            return set(conn.execute(select(paths.c.text)).scalars())
    finally:
        db.close()


def region_rows(url: str) -> int:
    db = open_database(url)
    try:
        with db.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(regions)).scalar_one())
    finally:
        db.close()


@pytest.mark.live
def test_prune_keeps_exactly_what_the_policy_says_and_reads_back_the_same(
    cli: Cli, db_url: str, target_binary: Path, tmp_path: Path
) -> None:
    one, other = Target(target_binary), Target(target_binary)
    try:
        record_history(cli, one, tmp_path)
        for _ in range(4):
            record(cli, other.pid)
    finally:
        one.stop()
        other.stop()
    set_times(db_url, one.pid, TIMES)
    set_times(db_url, other.pid, TIMES[:4])
    before = reading_of(cli, one.pid, HOURLY_3)
    libz = {p for p in path_texts(db_url) if "/libz.so" in p}
    assert libz
    rows_before = region_rows(db_url)

    dry = json_of(cli, "prune", "--keep-hourly", "3", "--pid", str(one.pid), "--dry-run")
    assert dry["dry_run"] is True and dry["freed_bytes"] == 0
    assert sorted(s["seq"] for s in dry["removed"]) == [2, 3, 4, 6, 7, 9]
    assert seqs_of(cli, one.pid) == list(range(1, 11))  # a dry run removes nothing

    done = json_of(cli, "prune", "--keep-hourly", "3", "--pid", str(one.pid))
    assert done["format"] == 1 and done["dry_run"] is False
    assert sorted(s["seq"] for s in done["removed"]) == [2, 3, 4, 6, 7, 9]
    assert all(s["pid"] == one.pid for s in done["removed"])
    assert done["removed"] == dry["removed"]
    assert done["kept"] == 4
    assert seqs_of(cli, one.pid) == HOURLY_3
    assert seqs_of(cli, other.pid) == [1, 2, 3, 4]  # --pid: the other process untouched

    after = reading_of(cli, one.pid, HOURLY_3)
    assert after["show"] == before["show"]
    assert after["diff"] == before["diff"]
    assert json_of(cli, "replay", "--pid", str(one.pid)) == before["replay"]
    # libz was mapped only at seqs 3 and 4, both gone: its rows and its path went too.
    assert region_rows(db_url) < rows_before
    assert not libz & path_texts(db_url)


@pytest.mark.live
def test_prune_applies_per_process_and_json_counts(
    cli: Cli, db_url: str, target_binary: Path
) -> None:
    one, other = Target(target_binary), Target(target_binary)
    try:
        for _ in range(10):
            record(cli, one.pid)
        for _ in range(3):
            record(cli, other.pid)
    finally:
        one.stop()
        other.stop()
    set_times(db_url, one.pid, TIMES)
    set_times(db_url, other.pid, TIMES[:3])
    done = json_of(cli, "prune", "--keep-last", "2")
    # Per process: seqs 9, 10 and the first of one; 2, 3 and the first of the other.
    assert seqs_of(cli, one.pid) == [1, 9, 10]
    assert seqs_of(cli, other.pid) == [1, 2, 3]
    assert len(done["removed"]) == 7 and done["kept"] == 6
    taken = [s["taken_at"] for s in done["removed"]]
    assert taken == sorted(taken, reverse=True)  # newest first, as `list`


@pytest.mark.live
def test_prune_within_and_name_and_host_filters(cli: Cli, db_url: str, target_binary: Path) -> None:
    one = Target(target_binary)
    try:
        for _ in range(10):
            record(cli, one.pid)
    finally:
        one.stop()
    set_times(db_url, one.pid, TIMES)
    host = listed(cli)[0]["host"]
    assert json_of(cli, "prune", "--keep-last", "1", "--name", "^nomatch$")["removed"] == []
    assert json_of(cli, "prune", "--keep-last", "1", "--host", "not-" + host)["removed"] == []
    assert seqs_of(cli, one.pid) == list(range(1, 11))
    dry = cli("prune", "--keep-last", "2", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[-1] == (
        "would remove 7 snapshots, keep 3, of 1 process under --keep-last 2, with "
        "each one's first and latest; dry run: nothing removed"
    )
    assert sum(f" {one.pid} " in line for line in lines) == 7  # one row per snapshot
    assert seqs_of(cli, one.pid) == list(range(1, 11))
    # Within 4h30m of 09:30: after 05:00, so 05:20 on.
    out = cli("prune", "--keep-within", "4h30m", "--name", "target", "--host", host)
    assert out.exit_code == 0, out.stderr
    assert out.stdout.startswith("removed 5 snapshots, kept 5, of 1 process; freed ")
    assert seqs_of(cli, one.pid) == [1, 7, 8, 9, 10]


def test_prune_usage_errors(sqlite_cli: Cli) -> None:
    for args, message in [
        ((), "no keep rule"),
        (("--keep-within", "7x"), "cannot read the duration"),
        (("--keep-within", "0d"), "zero"),
        (("--keep-last", "-1"), "--keep-last"),
        (("--keep-last", "1", "--format", "csv"), "'csv' is not one of 'table', 'json'"),
        (("--keep-last", "1", "--name", "("), "not a valid regular expression"),
    ]:
        out = sqlite_cli("prune", *args)
        assert out.exit_code == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 2


CHURN = textwrap.dedent(
    """
    import mmap, sys
    held = []
    print("ready", flush=True)
    for n, line in enumerate(sys.stdin):
        for m in held:
            m.close()
        # Adjacent one-page mappings whose protections alternate cannot merge; the
        # pattern flips each round, so every one of them is a new region.
        rw, ro = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
        held = [mmap.mmap(-1, 4096, prot=rw if (i + n) % 2 else ro) for i in range(int(line))]
        print("ok", flush=True)
    """
)


class Churn:
    """A live Python process that replaces thousands of its mappings on command."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def churn(self, n: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_the_sqlite_file_shrinks_by_what_prune_reports(sqlite_cli: Cli, sqlite_url: str) -> None:
    churn = Churn()
    try:
        for _ in range(10):
            churn.churn(2000)
            record(sqlite_cli, churn.pid)
    finally:
        churn.stop()
    set_times(sqlite_url, churn.pid, TIMES)
    before = reading_of(sqlite_cli, churn.pid, HOURLY_3)
    # What the file holds once the WAL is checkpointed into it.
    db = open_database(sqlite_url)
    from memsnap.store.prune import space_used

    size_before = space_used(db)
    db.close()
    done = json_of(sqlite_cli, "prune", "--keep-hourly", "3")
    size_after = os.stat(sqlite_url).st_size
    assert len(done["removed"]) == 6
    # Six of ten snapshots' 2,000 regions each are gone: well over a third of the file.
    assert size_after < size_before * 0.7, (size_before, size_after)
    assert done["freed_bytes"] == size_before - size_after
    assert not Path(sqlite_url + "-wal").exists() or Path(sqlite_url + "-wal").stat().st_size == 0
    after = reading_of(sqlite_cli, churn.pid, HOURLY_3)
    assert after["show"] == before["show"] and after["diff"] == before["diff"]


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime, timezone
    import memsnap.store.prune as prune
    from memsnap.retention import Policy
    from memsnap.store.database import open_database

    forgot = []
    real = prune._in_chunks

    def in_chunks(conn, sql, ids, before=()):
        real(conn, sql, ids, before)
        if sql.startswith("DELETE FROM paths"):
            forgot.append(ids)
            if len(forgot) == 2:
                # The second process's snapshots and regions are deleted, not committed.
                os.kill(os.getpid(), signal.SIGKILL)

    prune._in_chunks = in_chunks
    db = open_database(sys.argv[1])
    prune.prune(db, Policy(last=1), prune.Selection(), timezone.utc, datetime.now(timezone.utc))
    """
)


@pytest.mark.live
def test_a_prune_killed_halfway_loses_nothing_it_should_keep(
    cli: Cli, db_url: str, target_binary: Path, tmp_path: Path
) -> None:
    targets = [Target(target_binary) for _ in range(3)]
    try:
        for t in targets:
            (tmp_path / str(t.pid)).mkdir()
            record_history(cli, t, tmp_path / str(t.pid))
    finally:
        for t in targets:
            t.stop()
    first, second, third = (t.pid for t in targets)
    keep_all = {pid: reading_of(cli, pid, list(range(1, 11))) for pid in (second, third)}
    keep_last = reading_of(cli, first, [1, 10])
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, db_url], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The first process was pruned and committed; the second, killed in its transaction,
    # and the third, never reached, have every snapshot, reading back as before.
    assert seqs_of(cli, first) == [1, 10]
    assert reading_of(cli, first, [1, 10])["show"] == keep_last["show"]
    for pid in (second, third):
        assert seqs_of(cli, pid) == list(range(1, 11))
        again = reading_of(cli, pid, list(range(1, 11)))
        assert again["show"] == keep_all[pid]["show"] and again["diff"] == keep_all[pid]["diff"]
    # And the next prune finishes the job.
    json_of(cli, "prune", "--keep-last", "1")
    assert [seqs_of(cli, pid) for pid in (first, second, third)] == [[1, 10]] * 3


@pytest.mark.live
@pytest.mark.parametrize("newest_path", ["deleted", "libz"])
def test_a_recorder_remembering_a_path_prune_deleted_still_records(
    cli: Cli, db_url: str, target: Target, tmp_path: Path, newest_path: str
) -> None:
    """A watch keeps one connection for hours and remembers the path ids it has seen;
    a prune elsewhere may delete a path in between (libz, mapped only in snapshots that
    went). When the process maps that path again, the watch must still record it, under
    its own name: whether or not libz was the newest path row (SQLite hands a deleted
    highest id to the next row inserted)."""
    from memsnap.capture.procfs import Proc
    from memsnap.capture.record import record_pid

    watch = open_database(db_url)
    try:
        proc = Proc()
        record_pid(watch, proc, target.pid)
        target.send("dlopen libz.so.1")
        record_pid(watch, proc, target.pid)  # libz's path row is new here
        target.send("heap 4096")
        record_pid(watch, proc, target.pid)  # and found (and remembered) here
        target.send("dlclose")
        if newest_path == "deleted":
            target.send(f"deleted {tmp_path}")  # a newer path row than libz's
        record_pid(watch, proc, target.pid)
        json_of(cli, "prune", "--keep-last", "1")
        libz_left = any("/libz.so" in p for p in path_texts(db_url))
        target.send("memfd")  # a path row inserted after the prune
        record_pid(watch, proc, target.pid)
        target.send("dlopen libz.so.1")
        again = record_pid(watch, proc, target.pid)
    finally:
        watch.close()
    shown = json_of(cli, "show", str(again.snapshot_id))
    by_kind = {(r["kind"], r["path"]) for r in shown["regions"]}
    assert any(k == "lib-text" and p and "/libz.so" in p for k, p in by_kind)
    assert all(k == "shmem" for k, p in by_kind if p and p.startswith("/memfd:"))
    # libz went with its snapshots, unless it was the newest path row (kept so that no
    # id is ever handed out twice).
    assert libz_left == (newest_path == "libz")


@pytest.mark.live
def test_prune_of_a_database_the_user_may_only_read_says_so(target: Target) -> None:
    import test_dbpath

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to act as another user")
    as_nobody = [setpriv, f"--reuid={test_dbpath.NOBODY}", f"--regid={test_dbpath.NOBODY}"]
    as_nobody += ["--clear-groups", "--"]
    memsnap = test_dbpath.memsnap
    folder = Path(tempfile.mkdtemp(prefix="memsnap-root-"))
    folder.chmod(0o755)
    try:
        _prune_read_only(folder / "memsnap.db", as_nobody, memsnap, target)
    finally:
        shutil.rmtree(folder)


def _prune_read_only(path: Path, as_nobody: list[str], memsnap: Any, target: Target) -> None:
    for _ in range(3):
        record(Cli(str(path)), target.pid)
    path.chmod(0o644)
    before = path.read_bytes()
    dry = memsnap(str(path), "prune", "--keep-last", "1", "--dry-run", user=as_nobody)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1].startswith("would remove 1 snapshot, keep 2")
    done = memsnap(str(path), "prune", "--keep-last", "1", user=as_nobody)
    assert done.returncode == 1
    assert "read-only to you" in done.stderr and len(done.stderr.splitlines()) == 1
    assert path.read_bytes() == before


def test_prune_of_a_missing_database_creates_none(tmp_path: Path) -> None:
    out = Cli(str(tmp_path / "none.db"))("prune", "--keep-last", "1")
    assert out.exit_code == 1 and "nothing recorded" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.live
def test_a_prune_command_killed_while_it_waits_inside_its_transaction(
    pg_url: str, target_binary: Path, tmp_path: Path
) -> None:
    """The real `memsnap prune`, SIGKILLed in the middle of its second process: on
    PostgreSQL the test holds a lock on libz's path row, which only the second process's
    prune wants to delete (the first's leaves it: the second still maps it then), so the
    command stops there with that process's snapshots and regions deleted, uncommitted."""
    from sqlalchemy import create_engine, text

    cli = Cli(pg_url)
    targets = [Target(target_binary) for _ in range(2)]
    try:
        for t in targets:
            (tmp_path / str(t.pid)).mkdir()
            record_history(cli, t, tmp_path / str(t.pid))
    finally:
        for t in targets:
            t.stop()
    first, second = (t.pid for t in targets)
    whole = reading_of(cli, second, list(range(1, 11)))
    holder = create_engine(pg_url)
    try:
        with holder.connect() as conn:
            lock = conn.begin()
            conn.execute(text("SELECT id FROM paths WHERE text LIKE '%/libz.so%' FOR UPDATE"))
            pruning = subprocess.Popen(
                [sys.executable, "-m", "memsnap", "--db", pg_url, "prune", "--keep-last", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                waiting = 0
                # Polled from a connection of its own: within one transaction PostgreSQL
                # shows the same snapshot of pg_stat_activity every time.
                with holder.connect().execution_options(isolation_level="AUTOCOMMIT") as look:
                    for _ in range(600):
                        waiting = look.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type "
                                "= 'Lock' AND query LIKE 'DELETE FROM paths%'"
                            )
                        ).scalar_one()
                        if waiting or pruning.poll() is not None:
                            break
                        time.sleep(0.1)
                assert waiting == 1, "the prune never waited on the path row"
                pruning.send_signal(signal.SIGKILL)
                pruning.wait()
            finally:
                if pruning.poll() is None:
                    pruning.kill()
            lock.rollback()
    finally:
        holder.dispose()
    assert seqs_of(cli, first) == [1, 10]  # committed before the kill
    assert seqs_of(cli, second) == list(range(1, 11))
    again = reading_of(cli, second, list(range(1, 11)))
    assert again["show"] == whole["show"] and again["diff"] == whole["diff"]
    json_of(cli, "prune", "--keep-last", "1")
    assert seqs_of(cli, second) == [1, 10]
