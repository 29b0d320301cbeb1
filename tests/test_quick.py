"""The quick "unchanged" signal (`Proc.quick`): maps and smaps_rollup decide whether a
process recorded before is read whole.

The rule both ways, on a fake proc tree whose files the test writes (deterministic):
sizes that change a total are read whole and recorded as changed even when the layout is
the same; a move of pages between regions that keeps every total is the signal's known
blind spot, recorded as a copy unless MEMSNAP_QUICK=0. And on a live process: sizes that
grow without a layout change are recorded, and snapshots are the same with and without
the fast path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target
from memsnap.capture.procfs import Proc
from memsnap.capture.record import record_pid
from memsnap.store.database import open_database

PID = 4242
KEYS = [
    "Size",
    "KernelPageSize",
    "MMUPageSize",
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "KSM",
    "LazyFree",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Shared_Hugetlb",
    "Private_Hugetlb",
    "Swap",
    "SwapPss",
    "Locked",
]
HEADERS = (
    "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 ",
    "7f0000001000-7f0000002000 ---p 00000000 00:00 0 ",
    "7f0000002000-7f0000003000 rw-p 00000000 00:00 0 ",
)
SIZE_KEYS = ("Rss", "Pss", "Pss_Dirty", "Private_Dirty", "Referenced", "Anonymous")


def smaps_text(resident: tuple[int, int, int]) -> str:
    """Three one-page anonymous regions; `resident`: KiB resident in each."""
    blocks = []
    for header, kib in zip(HEADERS, resident, strict=True):
        sizes = {k: 0 for k in KEYS} | {"Size": 4, "KernelPageSize": 4, "MMUPageSize": 4}
        sizes |= dict.fromkeys(SIZE_KEYS, kib)
        lines = [header] + [f"{k}: {v} kB" for k, v in sizes.items()]
        lines += ["THPeligible:    0", "VmFlags: rd wr mr mw me ac "]
        blocks.append("\n".join(lines) + "\n")
    return "".join(blocks)


def rollup_text(resident: tuple[int, int, int]) -> str:
    total = sum(resident)
    lines = ["7f0000000000-7f0000003000 ---p 00000000 00:00 0 [rollup]"]
    lines += [f"{k}: {total if k in SIZE_KEYS else 0} kB" for k in KEYS[3:]]
    return "\n".join(lines) + "\n"


class FakeProc:
    """A proc root holding one process whose smaps and rollup the test sets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / str(PID)
        (self.dir / "task" / str(PID)).mkdir(parents=True)
        (root / "sys" / "kernel" / "random").mkdir(parents=True)
        (root / "sys" / "kernel" / "random" / "boot_id").write_text("fake-boot\n")
        fields = ["S"] + ["0"] * 40
        fields[19], fields[20] = "777", str(3 * 4096)
        fields[23], fields[24], fields[25] = "4096", "8192", "140000000000"
        (self.dir / "stat").write_text(f"{PID} (fake) " + " ".join(fields) + "\n")
        (self.dir / "comm").write_text("fake\n")
        (self.dir / "cmdline").write_text("fake\0")
        (self.dir / "maps").write_text("".join(h + "\n" for h in HEADERS))

    def set(self, smaps: tuple[int, int, int], rollup: tuple[int, int, int]) -> None:
        (self.dir / "smaps").write_text(smaps_text(smaps))
        (self.dir / "smaps_rollup").write_text(rollup_text(rollup))


def resident(url: str) -> list[list[int | None]]:
    """Each snapshot's resident bytes per region, in order."""
    cli = Cli(url)
    count = len(json.loads(cli("list", "--format", "json").stdout)["snapshots"])
    return [[r["rss"] for r in snapshot_json(cli, n)["regions"]] for n in range(1, count + 1)]


def record(url: str, proc: Proc) -> None:
    db = open_database(url)
    try:
        record_pid(db, proc, PID)
    finally:
        db.close()


@pytest.mark.parametrize("quick", ["1", "0"])
def test_sizes_that_change_a_total_are_recorded_though_the_layout_is_the_same(
    tmp_path: Path, sqlite_url: str, quick: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMSNAP_QUICK", quick)
    fake = FakeProc(tmp_path / "proc")
    proc = Proc(str(fake.root))
    fake.set((4, 0, 0), (4, 0, 0))
    record(sqlite_url, proc)
    record(sqlite_url, proc)  # unchanged: the signal is stored with this one
    fake.set((4, 0, 4), (4, 0, 4))
    record(sqlite_url, proc)
    assert resident(sqlite_url) == [[4096, 0, 0], [4096, 0, 0], [4096, 0, 4096]]


@pytest.mark.parametrize("quick", ["1", "0"])
def test_pages_moved_between_regions_with_equal_totals_are_the_signals_blind_spot(
    tmp_path: Path, sqlite_url: str, quick: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMSNAP_QUICK", quick)
    fake = FakeProc(tmp_path / "proc")
    proc = Proc(str(fake.root))
    fake.set((4, 0, 0), (4, 0, 0))
    record(sqlite_url, proc)
    record(sqlite_url, proc)
    # The rollup says what the kernel's would: the same totals as before.
    fake.set((0, 0, 4), (4, 0, 0))
    record(sqlite_url, proc)
    moved = [0, 0, 4096] if quick == "0" else [4096, 0, 0]
    assert resident(sqlite_url) == [[4096, 0, 0], [4096, 0, 0], moved]


def test_an_unchanged_process_is_not_read_whole(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeProc(tmp_path / "proc")
    proc = Proc(str(fake.root))
    fake.set((4, 0, 0), (4, 0, 0))
    record(sqlite_url, proc)
    record(sqlite_url, proc)
    (fake.dir / "smaps").write_text("not read\n")
    record(sqlite_url, proc)
    assert resident(sqlite_url) == [[4096, 0, 0]] * 3


def snapshot_json(cli: Cli, snapshot: int) -> Any:
    out = cli("show", str(snapshot), "--format", "json")
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("id", "taken_at", "seq"):
        data.get("snapshot", data).pop(key, None)
    return data


@pytest.mark.live
def test_live_sizes_that_grow_in_place_are_recorded(target: Target, cli: Cli) -> None:
    second = target.address("pair") + 2 * 4096
    for _ in range(2):
        assert cli("record", str(target.pid)).exit_code == 0
    target.send("grow")
    assert cli("record", str(target.pid)).exit_code == 0

    def rss(snapshot: int) -> list[int]:
        regions = snapshot_json(cli, snapshot)["regions"]
        return [
            r["rss"] for r in regions if int(str(r["start"]), 16) <= second < int(str(r["end"]), 16)
        ]

    # The page is in a region that may have merged with a neighbour: it grew by a page.
    assert [b - a for a, b in zip(rss(2), rss(3), strict=True)] == [4096]


@pytest.mark.live
def test_live_snapshots_are_the_same_with_and_without_the_fast_path(
    target: Target, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    target.send("pair")
    for quick in ("0", "1", "1", "0", "1"):
        monkeypatch.setenv("MEMSNAP_QUICK", quick)
        assert cli("record", str(target.pid)).exit_code == 0
    shown = [snapshot_json(cli, n) for n in range(1, 6)]
    layouts = [[(r["start"], r["end"], r["kind"]) for r in s["regions"]] for s in shown]
    assert all(layout == layouts[0] for layout in layouts)
