"""`record --all` and `--name` on this machine's real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from conftest import Cli

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

    def counted(self: Proc, pid: int) -> ProcessInfo:
        reads[pid] += 1
        return real(self, pid)

    monkeypatch.setattr(Proc, "info", counted)
    name, children = own_children
    out = sqlite_cli("record", "--all", "--name", f"^{name}$")
    assert out.exit_code == 0, out.stderr
    assert sorted(recorded_pids(sqlite_cli)) == sorted(children)
    assert [reads[pid] for pid in children] == [1, 1, 1]
    assert set(reads.values()) == {1}
