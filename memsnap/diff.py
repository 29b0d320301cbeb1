"""What changed from one snapshot to another: pure, no I/O.

Two ways to pair regions:

- `address`, for two snapshots of one process: a region is the same region when it
  starts at the same address (a heap that grew), else ends at the same address with the
  same path and kind (a stack grows down: its start moves, its end does not).
- `identity`, for two different processes (two runs of one program, two hosts):
  address-space randomisation moves everything, so regions are paired by path, offset
  and kind, in address order within each such group. Addresses are then not reported as
  changes: they were always going to differ.

The caller hands in the regions to compare (for one process, only those that differ, as
the store can tell cheaply) and each side's per-kind totals, so nothing here sums a full
layout twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

from memsnap.model import Region, Snapshot, Totals

LIB_KINDS = frozenset({"lib-text", "lib-rodata", "lib-data", "lib-bss"})
ADDRESS_FIELDS = ("size", "start", "end", "perms", "rss", "pss", "swap", "path", "deleted")
IDENTITY_FIELDS = ("size", "perms", "rss", "pss", "swap", "path", "deleted")
SMAPS_COMPARED = frozenset({"rss", "pss", "swap"})


@dataclass(frozen=True, slots=True)
class Amount:
    """A size and a resident size; rss is None where smaps was not recorded."""

    size: int
    rss: int | None


@dataclass(frozen=True, slots=True)
class Movement:
    """Before, after and their difference; a side is None where the thing is absent."""

    before: Amount | None
    after: Amount | None

    @property
    def delta(self) -> Amount:
        b = self.before or Amount(0, 0)
        a = self.after or Amount(0, 0)
        rss = None if a.rss is None or b.rss is None else a.rss - b.rss
        return Amount(a.size - b.size, rss)

    @property
    def moved(self) -> bool:
        """Whether the size or the resident size changed."""
        delta = self.delta
        return bool(delta.size or delta.rss)


@dataclass(frozen=True, slots=True)
class RegionChange:
    before: Region
    after: Region
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Diff:
    before: Snapshot
    after: Snapshot
    match: str
    loaded: tuple[str, ...]
    unloaded: tuple[str, ...]
    heap: Movement | None
    stack: Movement | None
    kinds: dict[str, Movement]
    totals: Movement
    added: tuple[Region, ...]
    removed: tuple[Region, ...]
    changed: tuple[RegionChange, ...]

    @property
    def new_executable(self) -> list[Region]:
        """Executable regions that were not there before."""
        return [r for r in self.added if "x" in r.perms]

    @property
    def writable_executable(self) -> list[Region]:
        """Regions that are writable and executable now and were not before."""
        fresh = [r for r in self.added if "w" in r.perms and "x" in r.perms]
        fresh += [
            c.after
            for c in self.changed
            if "w" in c.after.perms
            and "x" in c.after.perms
            and not ("w" in c.before.perms and "x" in c.before.perms)
        ]
        return sorted(fresh, key=lambda r: r.start)

    @property
    def made_executable(self) -> list[RegionChange]:
        """Permission changes that added `x`."""
        return [c for c in self.changed if "x" in c.after.perms and "x" not in c.before.perms]


def amount(t: Totals | None) -> Amount | None:
    return None if t is None else Amount(t.size, t.rss)


def _kind_movement(a: Snapshot, b: Snapshot, kind: str) -> Movement:
    zero_rss: int | None = 0
    before = a.kinds.get(kind)
    after = b.kinds.get(kind)
    # A kind absent on one side is zero there, with rss zero only if smaps was read.
    return Movement(
        amount(before) or Amount(0, zero_rss if a.has_smaps else None),
        amount(after) or Amount(0, zero_rss if b.has_smaps else None),
    )


def _optional_movement(a: Snapshot, b: Snapshot, kind: str) -> Movement | None:
    before, after = amount(a.kinds.get(kind)), amount(b.kinds.get(kind))
    if before is None and after is None:
        return None
    return Movement(before, after)


def libraries(regions: Iterable[Region]) -> set[str]:
    return {r.path for r in regions if r.kind in LIB_KINDS and r.path is not None}


# What identity pairing compares, as tuple positions: comparing two tuples in C first
# skips the field-by-field look for the many pairs that are equal.
_IDENTITY_KEY = itemgetter(*(Region._fields.index(f) for f in IDENTITY_FIELDS if f != "size"))


def _differences(x: Region, y: Region, fields: Sequence[str]) -> tuple[str, ...]:
    return tuple(f for f in fields if getattr(x, f) != getattr(y, f))


def pair_by_address(
    before: Sequence[Region], after: Sequence[Region], fields: Sequence[str] = ADDRESS_FIELDS
) -> tuple[list[Region], list[Region], list[RegionChange]]:
    """(removed, added, changed) for two snapshots of one process."""
    by_start = {r.start: r for r in after}
    changed: list[RegionChange] = []
    left: list[Region] = []
    for r in before:
        twin = by_start.pop(r.start, None)
        if twin is None:
            left.append(r)
        else:
            changed.append(RegionChange(r, twin, _differences(r, twin, fields)))
    by_end = {(r.end, r.path, r.kind): r for r in by_start.values()}
    removed: list[Region] = []
    for r in left:
        twin = by_end.pop((r.end, r.path, r.kind), None)
        if twin is None:
            removed.append(r)
        else:
            changed.append(RegionChange(r, twin, _differences(r, twin, fields)))
    added = sorted(by_end.values(), key=lambda r: r.start)
    changed = [c for c in changed if c.changes]
    changed.sort(key=lambda c: c.after.start)
    return removed, added, changed


def pair_by_identity(
    before: Sequence[Region], after: Sequence[Region], fields: Sequence[str] = IDENTITY_FIELDS
) -> tuple[list[Region], list[Region], list[RegionChange]]:
    """(removed, added, changed) for two different processes: by path, offset, kind."""
    groups: dict[tuple[str | None, int, str], deque[Region]] = {}
    for r in sorted(after, key=lambda r: r.start):
        groups.setdefault((r.path, r.offset if r.path else 0, r.kind), deque()).append(r)
    removed: list[Region] = []
    changed: list[RegionChange] = []
    for r in sorted(before, key=lambda r: r.start):
        queue = groups.get((r.path, r.offset if r.path else 0, r.kind))
        if not queue:
            removed.append(r)
            continue
        twin = queue.popleft()
        if r.end - r.start == twin.end - twin.start and _IDENTITY_KEY(r) == _IDENTITY_KEY(twin):
            continue
        differences = _differences(r, twin, fields)
        if differences:
            changed.append(RegionChange(r, twin, differences))
    added = sorted((r for queue in groups.values() for r in queue), key=lambda r: r.start)
    return removed, added, changed


def diff_snapshots(
    a: Snapshot,
    b: Snapshot,
    before: Sequence[Region],
    after: Sequence[Region],
    match: str,
    libraries_before: set[str],
    libraries_after: set[str],
) -> Diff:
    """The diff from `a` to `b`, given the regions to compare and each side's libraries.

    `a.kinds` and `b.kinds` must hold the per-kind totals of the whole snapshots.
    """
    # A side recorded without smaps has no rss, pss or swap: comparing them would call
    # every region changed. Only what both sides have is compared.
    compared: tuple[str, ...] = ADDRESS_FIELDS if match == "address" else IDENTITY_FIELDS
    if not (a.has_smaps and b.has_smaps):
        compared = tuple(f for f in compared if f not in SMAPS_COMPARED)
    if match == "address":
        removed, added, changed = pair_by_address(before, after, compared)
    else:
        removed, added, changed = pair_by_identity(before, after, compared)
    kinds = {k: _kind_movement(a, b, k) for k in sorted(set(a.kinds) | set(b.kinds))}
    return Diff(
        before=a,
        after=b,
        match=match,
        loaded=tuple(sorted(libraries_after - libraries_before)),
        unloaded=tuple(sorted(libraries_before - libraries_after)),
        heap=_optional_movement(a, b, "heap"),
        stack=_optional_movement(a, b, "stack"),
        kinds=kinds,
        totals=Movement(amount(a.totals), amount(b.totals)),
        added=tuple(added),
        removed=tuple(removed),
        changed=tuple(changed),
    )


def same_process(a: Snapshot, b: Snapshot) -> bool:
    """Same host, boot, pid and start time: addresses then mean the same thing."""
    return a.process_id == b.process_id and a.identity.boot_id is not None
