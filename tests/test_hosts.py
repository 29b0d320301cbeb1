"""Many hosts: `record --host-id` on live processes, `--host` on the reading commands,
and several hosts recording into one PostgreSQL at the same time."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Cli, Target

pytestmark = pytest.mark.live


def listed(cli: Cli, *args: str) -> list[dict[str, Any]]:
    result = cli("list", "--format", "json", *args)
    assert result.exit_code == 0, result
    snaps: list[dict[str, Any]] = json.loads(result.stdout)["snapshots"]
    return snaps


def test_live_record_stores_under_host_id(cli: Cli, target: Target) -> None:
    pid = str(target.pid)
    assert cli("record", pid, "--host-id", "web-1").exit_code == 0
    assert cli("record", pid).exit_code == 0
    hosts = [s["host"] for s in reversed(listed(cli))]
    assert hosts == ["web-1", socket.gethostname()]


def test_watch_and_all_take_host_id(cli: Cli, target: Target) -> None:
    pid = str(target.pid)
    result = cli("record", pid, "--every", "0.01", "--count", "2", "--host-id", "db-2")
    assert result.exit_code == 0, result
    assert (
        cli(
            "record",
            "--all",
            "--name",
            "^" + str(cast("list[str]", target.proc.args)[0]),
            "--host-id",
            "x",
        ).exit_code
        == 0
    )
    assert [s["host"] for s in reversed(listed(cli))] == ["db-2", "db-2", "x"]


@pytest.mark.parametrize("bad", ["", "  ", "h" * 256])
def test_bad_host_id_is_a_usage_error(cli: Cli, target: Target, bad: str) -> None:
    result = cli("record", str(target.pid), "--host-id", bad)
    assert result.exit_code == 2 and "--host-id" in result.stderr
    assert "Traceback" not in result.stderr


def test_host_filters_list_show_at_and_replay(cli: Cli, target: Target) -> None:
    pid = str(target.pid)
    for host in ("a", "b", "a"):
        assert cli("record", pid, "--host-id", host).exit_code == 0
    a = [s["id"] for s in listed(cli, "--host", "a")]
    b = [s["id"] for s in listed(cli, "--host", "b")]
    assert a == [3, 1] and b == [2]
    assert listed(cli, "--host", "c") == []
    # Without --host the pid names two processes (one per host): --host picks one.
    assert cli("show", "--at", "now", "--pid", pid).exit_code == 1
    shown = json.loads(
        cli("show", "--at", "now", "--pid", pid, "--host", "b", "--format", "json").stdout
    )
    assert shown["snapshot"]["id"] == 2 and shown["snapshot"]["host"] == "b"
    assert cli("replay", "--pid", pid).exit_code == 1
    steps = json.loads(cli("replay", "--pid", pid, "--host", "a", "--format", "json").stdout)[
        "steps"
    ]
    assert [s["snapshot"]["id"] for s in steps] == [1, 3]
    missing = cli("replay", "--pid", pid, "--host", "c")
    assert missing.exit_code == 1 and "on host c" in missing.stderr


def test_host_on_show_needs_at(cli: Cli, target: Target) -> None:
    assert cli("record", str(target.pid)).exit_code == 0
    result = cli("show", "1", "--host", "a")
    assert result.exit_code == 2 and "--at" in result.stderr


def test_four_hosts_record_into_one_postgresql_at_once(
    pg_url: str, target_binary: Path, tmp_path: Path
) -> None:
    """Four writers, each its own host id and its own processes plus one process they
    all record, at the same time: every snapshot is there, under its own host, with
    seqs 1..N per process and no process shared between hosts."""
    rounds = 15
    targets = [Target(target_binary) for _ in range(4)]
    try:
        shared = targets[0].pid
        Cli(pg_url)("list")  # nothing yet; the schema is created by the first writer
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "memsnap",
                    "--db",
                    pg_url,
                    "record",
                    *sorted({str(t.pid), str(shared)}),
                    "--host-id",
                    f"host-{i}",
                    "--every",
                    "0.01",
                    "--count",
                    str(rounds),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, t in enumerate(targets)
        ]
        outputs = [w.communicate(timeout=600) for w in writers]
        for w, (_out, err) in zip(writers, outputs, strict=True):
            assert w.returncode == 0, err
        cli = Cli(pg_url)
        for i, t in enumerate(targets):
            host = f"host-{i}"
            snaps = listed(cli, "--host", host)
            assert {s["host"] for s in snaps} == {host}
            pids = {t.pid, shared}
            assert {s["pid"] for s in snaps} == pids
            expected = rounds * (1 if t.pid == shared else 2)
            assert len(snaps) == expected, (host, len(snaps))
            for pid in pids:
                seqs = sorted(s["seq"] for s in snaps if s["pid"] == pid)
                assert seqs == list(range(1, rounds + 1)), (host, pid, seqs)
            # The lines each writer printed are exactly the ids stored under its host.
            printed = {int(line.split()[1].rstrip(":")) for line in outputs[i][0].splitlines()}
            assert printed == {s["id"] for s in snaps}
        assert len(listed(cli)) == sum(rounds * (1 if i == 0 else 2) for i in range(4))
    finally:
        for t in targets:
            t.stop()


# --- a watch with a budget: record --every --keep-* -----------------------------------------


def test_watch_prunes_as_it_goes(cli: Cli, target: Target) -> None:
    pid = str(target.pid)
    result = cli("record", pid, "--every", "0.01", "--count", "6", "--keep-last", "2")
    assert result.exit_code == 0, result
    # The first snapshot always stays, and the two newest.
    assert [s["seq"] for s in listed(cli)] == [6, 5, 1]


def test_keep_options_need_every(cli: Cli, target: Target) -> None:
    result = cli("record", str(target.pid), "--keep-last", "2")
    assert result.exit_code == 2 and "--every" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_month_of_watching_stays_bounded(sqlite_url: str, target: Target) -> None:
    """A watch every 10 minutes for 12 days under --keep-within 2h --keep-hourly 6
    --keep-daily 3, the clock driven by the test and the recording real (the heap
    grows now and then, so region rows come and go too): the snapshots kept are what
    the policy names, and after the first days the file no longer grows."""
    from datetime import UTC, datetime, timedelta

    from memsnap.capture.procfs import Proc
    from memsnap.capture.sweep import Sweep
    from memsnap.cli.record_cmd import prune_round
    from memsnap.retention import Policy
    from memsnap.store.database import open_database
    from memsnap.store.prune import space_used

    policy = Policy(hourly=6, daily=3, within=timedelta(hours=2))
    now = [datetime(2026, 11, 1, tzinfo=UTC)]
    db = open_database(sqlite_url)
    sweep = Sweep(db, Proc(), clock=lambda: now[0])
    sizes = {}
    rounds_a_day = 6 * 24
    try:
        for n in range(12 * rounds_a_day):
            if n % 40 == 0:
                target.send("heap 4096")
            done = sweep.run([target.pid])
            assert len(done.recorded) == 1
            prune_round(sweep, policy, [r.snapshot_id for r in done.recorded])
            if (n + 1) % rounds_a_day == 0:
                sizes[(n + 1) // rounds_a_day] = space_used(db)
            now[0] += timedelta(minutes=10)
    finally:
        db.close()
    snaps = listed(Cli(sqlite_url))
    # 2 h of 10-minute rounds (the latest included), 6 hours and 3 days (periods the
    # 2 h already holds count), and the first.
    assert len(snaps) <= 13 + 6 + 3 + 1, len(snaps)
    assert len(snaps) >= 13 + 3
    assert snaps[-1]["seq"] == 1
    # The pages freed by pruning are reused: from day 4 to day 12 (1,152 more rounds,
    # about 2 MiB unpruned) the file grows by a few pages of index at most.
    assert sizes[12] - sizes[4] <= 16384, sizes
