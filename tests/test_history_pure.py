"""memsnap.history without a database or a process: diff, replay and the choice of one
process, over plain `Region` values held by a small in-memory store (`Layouts`), which
answers the store's reading face (`memsnap.history.Reading`) the way `Repository` does.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from test_history import NOW as T0
from test_history import snap

from memsnap import history
from memsnap.errors import NotFoundError, SeveralProcesses
from memsnap.model import Region, Snapshot, SnapshotFilter, Totals

LIBC = "/usr/lib/libc.so.6"
LIBZ = "/usr/lib/libz.so.1"


def region(
    start: int, size: int, perms: str, kind: str, path: str | None = None, **kw: int
) -> Region:
    return Region(start, start + size, perms, 0, "08:01" if path else "00:00",
                  11 if path else 0, path, rss=kw.get("rss", size), pss=kw.get("pss", size),
                  swap=0, private_clean=kw.get("private_clean", 7), kind=kind)  # fmt: skip


def snapshot(sid: int, process_id: int, seq: int, pid: int = 100, minutes: int = 0) -> Snapshot:
    return replace(snap(sid, process_id, pid, "target", minutes), seq=seq)


class Layouts:
    """Snapshots and their regions in memory; counts what was asked of it."""

    def __init__(self, layouts: Sequence[tuple[Snapshot, list[Region]]]) -> None:
        self.layouts = {s.id: (s, sorted(rs)) for s, rs in layouts}
        self.asked: Counter[str] = Counter()
        self._light: dict[int, Region] = {}

    def snapshots(self, flt: SnapshotFilter) -> list[Snapshot]:
        self.asked["snapshots"] += 1
        found = [
            s
            for s, _ in self.layouts.values()
            if (flt.pid is None or s.pid == flt.pid)
            and (flt.since is None or s.taken_at >= flt.since)
            and (flt.until is None or s.taken_at <= flt.until)
        ]
        return sorted(found, key=lambda s: (s.taken_at, s.id), reverse=True)[: flt.limit]

    def snapshot(self, snapshot_id: int) -> Snapshot:
        if snapshot_id not in self.layouts:
            raise NotFoundError(f"no snapshot {snapshot_id}")
        return self.layouts[snapshot_id][0]

    def kind_totals(self, snapshot_id: int) -> dict[str, Totals]:
        kinds = Counter(r.kind for r in self.layouts[snapshot_id][1])
        return {k: Totals(regions=n) for k, n in kinds.items()}

    def layout(self, snap: Snapshot) -> list[Region]:
        self.asked["layout"] += 1
        return list(self.layouts[snap.id][1])

    def changed(self, a: Snapshot, b: Snapshot) -> tuple[list[Region], list[Region]]:
        self.asked["changed"] += 1
        before, after = Counter(self.layouts[a.id][1]), Counter(self.layouts[b.id][1])
        return sorted((before - after).elements()), sorted((after - before).elements())

    def unchanged_paths(self, a: Snapshot, b: Snapshot, candidates: set[str]) -> set[str]:
        both = set(self.layouts[a.id][1]) & set(self.layouts[b.id][1])
        return {r.path for r in both if r.path in candidates}

    def pairing_layout(self, snap: Snapshot) -> list[Region]:
        # Only what pairing compares, as the database's store reads it: the rest is None.
        self.asked["pairing_layout"] += 1
        light = []
        for r in self.layouts[snap.id][1]:
            unread: Any = None  # a field the pairing read leaves out
            part = r._replace(dev=unread, inode=unread, private_clean=unread)
            self._light[id(part)] = r
            light.append(part)
        return light

    def whole(self, regions: Sequence[Region]) -> list[Region]:
        return [self._light[id(r)] for r in regions]


HEAP = region(0x5000_0000, 0x21000, "rw-p", "heap", "[heap]")
STACK = region(0x7FFD_0000_0000, 0x21000, "rw-p", "stack", "[stack]")
LIBC_TEXT = region(0x7F00_0000_0000, 0x150000, "r-xp", "lib-text", LIBC)
LIBZ_TEXT = region(0x7F00_1000_0000, 0x13000, "r-xp", "lib-text", LIBZ)
ANON = region(0x7F00_2000_0000, 0x700000, "rw-p", "anon")

FIRST = snapshot(1, process_id=1, seq=1)
SECOND = snapshot(2, process_id=1, seq=2, minutes=1)
THIRD = snapshot(3, process_id=1, seq=3, minutes=2)
BIGGER_HEAP = HEAP._replace(end=HEAP.start + 0x1E00000, rss=0x1E00000, pss=0x1E00000)
ONE = [
    (FIRST, [HEAP, STACK, LIBC_TEXT]),
    (SECOND, [BIGGER_HEAP, STACK, LIBC_TEXT, LIBZ_TEXT, ANON]),
    (THIRD, [BIGGER_HEAP, STACK, LIBC_TEXT, ANON]),
]


def test_a_diff_of_one_process_reads_only_what_changed() -> None:
    store = Layouts(ONE)
    d = history.diff_between(store, FIRST, SECOND)
    assert d.match == "address"
    assert store.asked["layout"] == 0 and store.asked["pairing_layout"] == 0
    assert d.loaded == (LIBZ,) and d.unloaded == ()
    assert set(d.added) == {LIBZ_TEXT, ANON} and d.removed == ()
    assert [(c.before, c.after) for c in d.changed] == [(HEAP, BIGGER_HEAP)]
    # Backwards too: what was added is then removed.
    back = history.diff_between(store, SECOND, FIRST)
    assert set(back.removed) == {LIBZ_TEXT, ANON} and back.unloaded == (LIBZ,)


def test_a_library_unchanged_on_both_sides_is_neither_loaded_nor_unloaded() -> None:
    moved = LIBC_TEXT._replace(rss=(LIBC_TEXT.rss or 0) // 2)  # a change within libc
    second_libc = region(LIBC_TEXT.end, 0x1000, "r--p", "lib-rodata", LIBC)
    store = Layouts([(FIRST, [LIBC_TEXT, second_libc]), (SECOND, [moved, second_libc])])
    d = history.diff_between(store, FIRST, SECOND)
    assert d.loaded == () and d.unloaded == ()
    assert [c.changes for c in d.changed] == [("rss",)]


def test_two_processes_are_paired_by_identity_and_reported_whole() -> None:
    other = snapshot(9, process_id=2, seq=1, pid=200, minutes=5)
    # Address-space randomisation moved everything: pairing goes by path, offset, kind.
    shift = 0x1000_0000
    moved = [r._replace(start=r.start + shift, end=r.end + shift) for r in ONE[1][1]]
    store = Layouts([ONE[0], (other, moved)])
    d = history.diff_between(store, FIRST, other)
    assert d.match == "identity"
    assert store.asked["pairing_layout"] == 2 and store.asked["changed"] == 0
    assert d.loaded == (LIBZ,)
    # Whole regions come back (the fields pairing did not read are filled in).
    assert {r.inode for r in d.added} == {11, 0}
    assert all(r.private_clean == 7 for r in (*d.added, *d.removed))
    for c in d.changed:
        assert c.before in ONE[0][1] and c.after in moved
        assert c.before.dev is not None and c.after.dev is not None


def test_a_replay_walks_one_process_oldest_first_with_each_step_diffed() -> None:
    store = Layouts(ONE)
    steps = history.process_snapshots(store, pid=100)
    assert [s.id for s in steps] == [1, 2, 3]
    assert steps[1].kinds["lib-text"] == Totals(regions=2)
    diffs = [history.diff_between(store, a, b) for a, b in itertools.pairwise(steps)]
    assert [d.loaded for d in diffs] == [(LIBZ,), ()]
    assert [d.unloaded for d in diffs] == [(), (LIBZ,)]
    assert [len(d.added) for d in diffs] == [2, 0]
    assert store.asked["layout"] == 0


def test_the_last_two_and_the_one_at_a_time() -> None:
    store = Layouts(ONE)
    assert [s.id for s in history.last_two(store, 100)] == [2, 3]
    assert history.snapshot_at(store, T0 + timedelta(seconds=90), pid=100).id == 2
    with pytest.raises(NotFoundError):
        history.snapshot_at(store, T0 - timedelta(days=1), pid=100)


def test_a_reused_pid_is_two_histories() -> None:
    later = snapshot(7, process_id=5, seq=1, pid=100, minutes=30)
    store = Layouts([*ONE, (later, [HEAP])])
    with pytest.raises(SeveralProcesses, match="pid 100 names 2 recorded processes"):
        history.process_snapshots(store, pid=100)
    # A time range that holds one of them picks it.
    steps = history.process_snapshots(store, pid=100, since=T0 + timedelta(minutes=10))
    assert [s.id for s in steps] == [7]
