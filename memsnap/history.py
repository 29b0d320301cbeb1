"""Reading the recorded history: which snapshots, of which one process, and what
changed between two. Pure orchestration over the store's reading face (`Reading`, which
`memsnap.store.repository.Repository` is): no SQL, no connection, no database error
here, so diff and replay run on plain `Region` values as well as on a database.

The rule it keeps: a history is one process (host, boot, pid and start time). Where a
pid or a name selects several, `SeveralProcesses` lists them and says how to choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from memsnap.diff import Diff, RegionChange, diff_snapshots, libraries, same_process
from memsnap.errors import MemsnapError, NotFoundError, SeveralProcesses
from memsnap.model import Region, Snapshot, SnapshotFilter, Totals
from memsnap.names import visible


class Reading(Protocol):
    """What the history reads from a store (`Repository`, or a test's regions)."""

    def snapshots(self, flt: SnapshotFilter) -> list[Snapshot]:
        """The snapshots matching the filter, newest first (taken_at, then id)."""
        ...

    def snapshot(self, snapshot_id: int) -> Snapshot:
        """One snapshot with its kind totals; `NotFoundError` when there is none."""
        ...

    def kind_totals(self, snapshot_id: int) -> dict[str, Totals]: ...

    def layout(self, snap: Snapshot) -> list[Region]:
        """Every region of a snapshot, in ascending address order."""
        ...

    def changed(self, a: Snapshot, b: Snapshot) -> tuple[list[Region], list[Region]]:
        """Two snapshots of one process, a before b: a's regions gone by b, b's new ones."""
        ...

    def unchanged_paths(self, a: Snapshot, b: Snapshot, candidates: set[str]) -> set[str]:
        """Which of `candidates` have a region unchanged from a to b."""
        ...

    def pairing_layout(self, snap: Snapshot) -> list[Region]:
        """A snapshot's regions in address order; fields pairing does not compare may
        be None (`whole` fills them in)."""
        ...

    def whole(self, regions: Sequence[Region]) -> list[Region]:
        """The full regions of regions `pairing_layout` gave, in the same order."""
        ...


def layout(store: Reading, snap: Snapshot) -> list[Region]:
    """Every region of a snapshot, in ascending address order."""
    return store.layout(snap)


@dataclass(frozen=True, slots=True)
class ProcessSeen:
    """One process among some snapshots: the first and last of them, and how many."""

    process_id: int
    first: Snapshot
    last: Snapshot
    count: int

    @property
    def pid(self) -> int:
        return self.first.pid

    @property
    def command(self) -> str:
        return self.last.command

    def describe(self, with_pid: bool = True) -> str:
        """`python3 on vm: 2 snapshots, ids 2 to 3, 2026-11-25 15:13:04 to 15:13:06`."""
        first, last = (s.taken_at.astimezone() for s in (self.first, self.last))
        command = visible(self.command)
        who = f"{self.pid} ({command})" if with_pid else command
        where = f"{who} on {visible(self.last.host)}"
        if self.count == 1:
            return f"{where}: snapshot {self.first.id} at {first:%Y-%m-%d %H:%M:%S}"
        until = f"{last:%H:%M:%S}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M:%S}"
        return (
            f"{where}: {self.count} snapshots, ids {self.first.id} to {self.last.id}, "
            f"{first:%Y-%m-%d %H:%M:%S} to {until}"
        )


def group_processes(snaps: Sequence[Snapshot]) -> list[ProcessSeen]:
    """The processes these snapshots are of, in the order they were first recorded.

    A process is one `processes` row (host, boot, pid and start time): a pid reused by
    another program, or given to an imported text, is another process."""
    firsts: dict[int, Snapshot] = {}
    lasts: dict[int, Snapshot] = {}
    counts: dict[int, int] = {}
    for s in snaps:
        key = s.process_id
        first, last = firsts.get(key), lasts.get(key)
        if first is None or (s.taken_at, s.id) < (first.taken_at, first.id):
            firsts[key] = s
        if last is None or (s.taken_at, s.id) > (last.taken_at, last.id):
            lasts[key] = s
        counts[key] = counts.get(key, 0) + 1
    return [
        ProcessSeen(key, first, lasts[key], counts[key])
        for key, first in sorted(firsts.items(), key=lambda kv: (kv[1].taken_at, kv[1].id))
    ]


def describe_processes(seen: Sequence[ProcessSeen], most: int = 10) -> str:
    """The processes on one line, the first `most` of them (with their pids where
    these differ)."""
    with_pid = len({p.pid for p in seen}) > 1
    shown = "; ".join(p.describe(with_pid) for p in seen[:most])
    return shown if len(seen) <= most else f"{shown}; and {len(seen) - most} more"


def _selected(pid: int | None, name: str | None) -> str:
    if pid is not None and name is not None:
        return f"pid {pid} matching {name!r}"
    if pid is not None:
        return f"pid {pid}"
    return f"--name {name!r}" if name is not None else "the snapshots"


def one_process(
    snaps: Sequence[Snapshot], pid: int | None, name: str | None, choose: str
) -> Sequence[Snapshot]:
    """`snaps` when they are all of one process; else `SeveralProcesses` listing them,
    with `choose` saying how to pick one."""
    seen = group_processes(snaps)
    if len(seen) <= 1:
        return snaps
    if pid is not None and name is None:
        what = f"pid {pid} names {len(seen)} recorded processes"
    elif pid is None and name is None:
        what = f"{len(seen)} processes were recorded"
    else:
        what = f"{_selected(pid, name)} matches {len(seen)} recorded processes"
    raise SeveralProcesses(f"{what}: {describe_processes(seen)}\n{choose}")


def snapshot_at(
    store: Reading,
    when: datetime,
    pid: int | None = None,
    name: str | None = None,
    host: str | None = None,
) -> Snapshot:
    """The latest snapshot taken at or before `when`, of the one process selected (by
    pid, name pattern, or because only one was recorded by then), on `host` if given."""
    candidates = store.snapshots(SnapshotFilter(pid=pid, name=name, until=when, host=host))
    if not candidates:
        who = f" of {_selected(pid, name)}" if pid is not None or name is not None else ""
        who += f" on host {visible(host)}" if host is not None else ""
        raise NotFoundError(f"nothing recorded{who} at or before {when.isoformat()}")
    if pid is not None:
        choose = "show one of their snapshots by its id (memsnap show ID)"
    else:
        other = "--pid" if name is not None else "--pid or --name"
        choose = f"choose one with {other}, or show a snapshot by its id (memsnap show ID)"
    one_process(candidates, pid, name, choose)
    return store.snapshot(candidates[0].id)


def history_of(
    store: Reading,
    pid: int | None = None,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    choose: str | None = None,
    host: str | None = None,
) -> list[Snapshot]:
    """The snapshots of the one process selected (by pid and/or name pattern, within
    the times given), newest first; `NotFoundError` when there are none and
    `SeveralProcesses` when they are of more than one process."""
    snaps = store.snapshots(SnapshotFilter(pid=pid, name=name, since=since, until=until, host=host))
    if not snaps:
        span = " in that time" if since is not None or until is not None else ""
        where = f" on host {visible(host)}" if host is not None else ""
        raise NotFoundError(f"no snapshots of {_selected(pid, name)}{where}{span}")
    if choose is None:
        choose = "narrow it to one with " + (
            "--since/--until" if pid is not None else "--pid, --since or --until"
        )
    one_process(snaps, pid, name, choose)
    return snaps


def process_snapshots(
    store: Reading,
    pid: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    name: str | None = None,
    host: str | None = None,
) -> list[Snapshot]:
    """A replay's steps: every snapshot of the one process selected, oldest first,
    with kind totals."""
    snaps = history_of(store, pid, name, since, until, host=host)
    return [replace(s, kinds=store.kind_totals(s.id)) for s in reversed(snaps)]


def last_two(store: Reading, pid: int) -> tuple[Snapshot, Snapshot]:
    """The last two snapshots of the process with this pid (the one process it names)."""
    snaps = history_of(store, pid, choose="diff two of their snapshots by id (memsnap diff A B)")
    if len(snaps) < 2:
        raise MemsnapError(
            f"pid {pid} has one snapshot ({snaps[0].id}): record it again to have a change"
        )
    return store.snapshot(snaps[1].id), store.snapshot(snaps[0].id)


def diff_between(store: Reading, a: Snapshot, b: Snapshot) -> Diff:
    """The diff from a to b, reading only changed regions when both are one process."""
    if same_process(a, b):
        lo, hi = (a, b) if a.seq <= b.seq else (b, a)
        gone, came = store.changed(lo, hi)
        both = store.unchanged_paths(lo, hi, libraries(gone) | libraries(came))
        before, after = (gone, came) if lo is a else (came, gone)
        return diff_snapshots(
            a, b, before, after, "address", libraries(before) | both, libraries(after) | both
        )
    # Two different processes: every region takes part in the pairing, but only what
    # the diff reports is read whole.
    light_a, light_b = store.pairing_layout(a), store.pairing_layout(b)
    found = diff_snapshots(
        a, b, light_a, light_b, "identity", libraries(light_a), libraries(light_b)
    )
    changed = found.changed
    before = store.whole([*found.removed, *(c.before for c in changed)])
    after = store.whole([*found.added, *(c.after for c in changed)])
    removed, added = len(found.removed), len(found.added)
    return replace(
        found,
        added=tuple(after[:added]),
        removed=tuple(before[:removed]),
        changed=tuple(
            RegionChange(old, new, c.changes)
            for old, new, c in zip(before[removed:], after[added:], changed, strict=True)
        ),
    )
