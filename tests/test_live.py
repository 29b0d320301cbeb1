"""Recording real processes: the kernel's /proc and pmap are the oracle."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target
from memsnap.capture.procfs import read_file
from memsnap.parse import parse_text


def recorded(cli: Cli, pid: int, *extra: str) -> Any:
    done = cli("record", str(pid), *extra)
    assert done.exit_code == 0, done.stderr
    snapshot_id = done.stdout.split()[1].rstrip(":")
    shown = cli("show", snapshot_id, "--format", "json")
    assert shown.exit_code == 0, shown.stderr
    return json.loads(shown.stdout)  # a JSON document: its shape is what the tests check


def build_everything(target: Target, tmp_path: Path) -> dict[str, int]:
    """Give the target one of each thing the classifier must tell apart."""
    target.send("dlopen libz.so.1")
    return {
        "heap": target.address("heap 3000000"),
        "anon": target.address("anon 7340032"),
        "rwx": target.address("rwx"),
        "shm": target.address("shm"),
        "memfd": target.address("memfd"),
        "deleted": target.address(f"deleted {tmp_path}"),
        "weird": target.address(f"weird {tmp_path}"),
        "thread": target.address("thread"),
    }


@pytest.mark.live
def test_record_matches_proc_maps_and_smaps(cli: Cli, target: Target, tmp_path: Path) -> None:
    build_everything(target, tmp_path)
    doc = recorded(cli, target.pid)
    kernel = parse_text(read_file(f"/proc/{target.pid}/smaps")).mappings
    regions = doc["regions"]
    assert isinstance(regions, list)
    assert len(regions) == len(kernel)
    for mine, m in zip(regions, kernel, strict=True):
        assert (mine["start"], mine["end"]) == (hex(m.start), hex(m.end))
        assert (mine["perms"], mine["offset"], mine["device"], mine["inode"]) == (
            m.perms,
            m.offset,
            m.dev,
            m.inode,
        )
        assert (mine["path"], mine["deleted"]) == (m.path, m.deleted)
        assert mine["rss"] == m.rss and mine["swap"] == m.swap
        assert mine["size"] == m.end - m.start
    snapshot = doc["snapshot"]
    assert isinstance(snapshot, dict)
    assert snapshot["pid"] == target.pid and snapshot["command"] == "target"
    assert snapshot["totals"]["regions"] == len(kernel)
    assert snapshot["totals"]["rss"] == sum(m.rss or 0 for m in kernel)


@pytest.mark.live
def test_maps_lines_are_the_kernels_own(cli: Cli, target: Target, tmp_path: Path) -> None:
    # The raw maps text, not smaps: paths with a newline come back escaped exactly.
    build_everything(target, tmp_path)
    doc = recorded(cli, target.pid, "--no-smaps")
    lines = [ln for ln in read_file(f"/proc/{target.pid}/maps").split("\n") if ln]
    regions = doc["regions"]
    assert isinstance(regions, list) and len(regions) == len(lines)
    weird = [r for r in regions if r["path"] and "\n" in r["path"]]
    assert [r["path"] for r in weird] == [f"{tmp_path}/we ird\nname.bin"]
    assert any("we ird\\012name.bin" in ln for ln in lines)
    assert all(r["rss"] is None and r["pss"] is None for r in regions)  # not recorded
    assert doc["snapshot"]["totals"]["rss"] is None


@pytest.mark.live
def test_classification_of_a_live_process(cli: Cli, target: Target, tmp_path: Path) -> None:
    at = build_everything(target, tmp_path)
    doc = recorded(cli, target.pid)
    regions = doc["regions"]
    assert isinstance(regions, list)

    def kind_at(address: int) -> str:
        (r,) = [r for r in regions if int(r["start"], 16) <= address < int(r["end"], 16)]
        return str(r["kind"])

    def kinds_of(pred: Callable[[Any], object]) -> set[str]:
        return {r["kind"] for r in regions if pred(r)}

    exe = str(Path(f"/proc/{target.pid}/exe").readlink())
    assert kinds_of(lambda r: r["path"] == exe) >= {"text", "rodata", "data"}
    assert any(r["kind"] == "bss" for r in regions)  # the helper's 3 MiB static array
    libc = kinds_of(lambda r: r["path"] and "/libc.so" in r["path"])
    assert libc == {"lib-text", "lib-rodata", "lib-data"}
    libz = kinds_of(lambda r: r["path"] and "/libz.so" in r["path"])
    assert "lib-text" in libz and libz <= {"lib-text", "lib-rodata", "lib-data"}
    assert any(r["kind"] == "lib-bss" for r in regions)  # libc's bss, by its ELF headers
    assert kind_at(at["heap"]) == "heap"
    assert kinds_of(lambda r: r["path"] == "[stack]") == {"stack"}
    assert kind_at(at["anon"]) == "anon"
    assert kind_at(at["rwx"]) == "anon"
    assert kind_at(at["shm"]) == "shmem"
    assert kind_at(at["memfd"]) == "shmem"
    assert kind_at(at["deleted"]) == "file"
    assert kind_at(at["weird"]) == "file"
    (gone,) = [r for r in regions if int(r["start"], 16) == at["deleted"]]
    assert gone["deleted"] is True and gone["path"] == f"{tmp_path}/gone.bin"
    thread_stacks = [r for r in regions if r["kind"] == "thread-stack"]
    assert len(thread_stacks) == 1 and kind_at(at["thread"]) == "thread-stack"
    (guard,) = [r for r in regions if r["end"] == thread_stacks[0]["start"]]
    assert guard["kind"] == "guard" and guard["perms"] == "---p"
    vdso = {r["path"]: r["kind"] for r in regions if r["path"] in ("[vdso]", "[vvar]")}
    assert vdso == {"[vdso]": "vdso", "[vvar]": "vvar"}


@pytest.mark.live
@pytest.mark.skipif(shutil.which("pmap") is None, reason="pmap (procps) is not installed")
def test_rss_agrees_with_pmap(cli: Cli, target: Target, tmp_path: Path) -> None:
    build_everything(target, tmp_path)
    doc = recorded(cli, target.pid)
    out = subprocess.run(
        ["pmap", "-X", str(target.pid)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    header = out[1].split()
    rows = {}
    for line in out[2:]:
        fields = line.split()
        if len(fields) > header.index("Rss") and fields[0].isalnum() and len(fields[0]) >= 8:
            rows[int(fields[0], 16)] = int(fields[header.index("Rss")]) * 1024
    regions = doc["regions"]
    assert isinstance(regions, list)
    assert len(rows) == len(regions)
    for r in regions:
        assert rows[int(r["start"], 16)] == r["rss"], r["start"]


@pytest.mark.live
def test_unchanged_process_adds_no_regions(db_url: str, target: Target) -> None:
    from sqlalchemy import func, select

    from memsnap.capture.procfs import Proc
    from memsnap.capture.record import record_pid
    from memsnap.store.database import open_database
    from memsnap.store.schema import paths, regions

    # maps only: a shared library's PSS moves whenever another process maps it too
    # (pytest starts many), which is a real change and rightly stored as one.
    db = open_database(db_url)
    try:
        proc = Proc()
        first = record_pid(db, proc, target.pid, smaps=False)
        with db.reading() as conn:
            rows_after_first = conn.execute(select(func.count()).select_from(regions)).scalar()
            paths_after_first = conn.execute(select(func.count()).select_from(paths)).scalar()
        for _ in range(5):
            record_pid(db, proc, target.pid, smaps=False)
        with db.reading() as conn:
            rows = conn.execute(select(func.count()).select_from(regions)).scalar()
            path_rows = conn.execute(select(func.count()).select_from(paths)).scalar()
        assert first.totals.regions == rows_after_first
        assert rows == rows_after_first  # nothing changed, nothing added
        assert (
            path_rows
            == paths_after_first
            == len(
                {
                    m.path
                    for m in parse_text(read_file(f"/proc/{target.pid}/maps")).mappings
                    if m.path
                }
            )
        )
    finally:
        db.close()


@pytest.mark.live
def test_layout_of_each_snapshot_survives_later_changes(cli: Cli, target: Target) -> None:
    before = recorded(cli, target.pid)
    target.send("anon 7340032")
    after = recorded(cli, target.pid)
    again = cli("show", str(before["snapshot"]["id"]), "--format", "json")
    assert json.loads(again.stdout)["regions"] == before["regions"]
    # The kernel may merge the new mapping with an anonymous neighbour: compare sizes.
    grown = after["snapshot"]["totals"]["size"] - before["snapshot"]["totals"]["size"]
    assert grown == 7340032
    assert after["regions"] != before["regions"]


@pytest.mark.live
def test_a_change_writes_only_the_changed_rows(db_url: str, target: Target) -> None:
    from sqlalchemy import func, select

    from memsnap.capture.procfs import Proc
    from memsnap.capture.record import record_pid
    from memsnap.store.database import open_database
    from memsnap.store.schema import regions

    def lines() -> set[str]:
        return {ln for ln in read_file(f"/proc/{target.pid}/maps").split("\n") if ln}

    db = open_database(db_url)
    try:
        proc = Proc()
        record_pid(db, proc, target.pid, smaps=False)
        before = lines()
        target.send("rwx")
        target.send("anon 65536")
        record_pid(db, proc, target.pid, smaps=False)
        after = lines()
        with db.reading() as conn:
            count = conn.execute(select(func.count()).select_from(regions)).scalar()
            closed = conn.execute(
                select(func.count()).select_from(regions).where(regions.c.last_seq == 1)
            ).scalar()
        assert count == len(before) + len(after - before)
        assert closed == len(before - after)
        assert 1 <= len(after - before) <= 3  # the new mappings, merged or not
    finally:
        db.close()
