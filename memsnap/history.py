"""Reading the recorded history: snapshots, layouts, what changed between two of them.

Every function takes an open connection and returns frozen dataclasses from
`memsnap.model`; nothing SQLAlchemy leaves this module. The layout at snapshot k of a
process is one indexed query (`first_seq <= k` and `last_seq` NULL or `>= k`); the
regions that differ between two snapshots of one process are two more, which read only
rows that changed in between.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property, partial
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Connection, Row, Select, or_, select

from memsnap.diff import Diff, RegionChange, diff_snapshots, libraries, same_process
from memsnap.errors import NotFoundError
from memsnap.model import ProcessIdentity, Region, Snapshot, Totals
from memsnap.names import visible
from memsnap.store.rawsql import placeholder
from memsnap.store.schema import (
    U64_REGION_FIELDS,
    U64_SHIFT,
    paths,
    processes,
    regions,
    snapshot_kinds,
    snapshots,
)

_SNAPSHOT_COLUMNS = (
    snapshots.c.id,
    snapshots.c.process_id,
    snapshots.c.seq,
    snapshots.c.taken_at,
    snapshots.c.label,
    snapshots.c.source,
    snapshots.c.page_size,
    snapshots.c.kernel,
    snapshots.c.has_smaps,
    snapshots.c.regions,
    snapshots.c.size,
    snapshots.c.rss,
    snapshots.c.pss,
    snapshots.c.swap,
    snapshots.c.uss,
    processes.c.host,
    processes.c.boot_id,
    processes.c.pid,
    processes.c.start_ticks,
    processes.c.exe,
    processes.c.command,
    processes.c.cmdline,
)


@dataclass(frozen=True, slots=True)
class SnapshotFilter:
    pid: int | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None


def _snapshot_query() -> Select[Any]:
    return select(*_SNAPSHOT_COLUMNS).select_from(
        snapshots.join(processes, snapshots.c.process_id == processes.c.id)
    )


def _snapshot(row: Row[Any], kinds: dict[str, Totals] | None = None) -> Snapshot:
    return Snapshot(
        id=row.id,
        process_id=row.process_id,
        seq=row.seq,
        taken_at=row.taken_at,
        identity=ProcessIdentity(row.host, row.boot_id, row.pid, row.start_ticks),
        command=row.command,
        cmdline=tuple(json.loads(row.cmdline)),
        exe=row.exe,
        label=row.label,
        page_size=row.page_size,
        kernel=row.kernel,
        source=row.source,
        has_smaps=bool(row.has_smaps),
        totals=Totals(row.regions, row.size, row.rss, row.pss, row.swap, row.uss),
        kinds=kinds or {},
    )


def name_matches(
    pattern: re.Pattern[str], command: str, exe: str | None, cmdline: Sequence[str]
) -> bool:
    """A process matches a name pattern by its command, program path or first argument."""
    return any(pattern.search(text) for text in (command, exe or "", *cmdline[:1]))


def list_snapshots(conn: Connection, flt: SnapshotFilter) -> list[Snapshot]:
    """Snapshots matching the filter, newest first."""
    query = _snapshot_query().order_by(snapshots.c.taken_at.desc(), snapshots.c.id.desc())
    if flt.pid is not None:
        query = query.where(processes.c.pid == flt.pid)
    if flt.since is not None:
        query = query.where(snapshots.c.taken_at >= flt.since)
    if flt.until is not None:
        query = query.where(snapshots.c.taken_at <= flt.until)
    pattern = re.compile(flt.name) if flt.name is not None else None
    if flt.limit is not None and pattern is None:
        query = query.limit(flt.limit)
    found = []
    for row in conn.execute(query):
        snap = _snapshot(row)
        if pattern is not None and not name_matches(pattern, snap.command, snap.exe, snap.cmdline):
            continue
        found.append(snap)
        if flt.limit is not None and len(found) >= flt.limit:
            break
    return found


def kind_totals(conn: Connection, snapshot_id: int) -> dict[str, Totals]:
    rows = conn.execute(select(snapshot_kinds).where(snapshot_kinds.c.snapshot_id == snapshot_id))
    return {r.kind: Totals(r.regions, r.size, r.rss, r.pss, r.swap, r.uss) for r in rows}


def get_snapshot(conn: Connection, snapshot_id: int) -> Snapshot:
    row = conn.execute(_snapshot_query().where(snapshots.c.id == snapshot_id)).first()
    if row is None:
        raise NotFoundError(f"no snapshot {snapshot_id}")
    return _snapshot(row, kind_totals(conn, snapshot_id))


# Regions are read with hand-written SQL straight from the driver (a layout can hold
# 60,000 rows: SQLAlchemy's Row objects and per-value type processing would cost more
# than SQLite's own work), the U64 columns as stored (value - 2**63).
_SQL_OF_FIELD = {"start": "r.start_addr", "end": "r.end_addr", "path": "p.text"}
# What pairing the regions of two different processes looks at (diff.IDENTITY_FIELDS,
# the pairing key, the libraries): every other field is only read for the regions a
# diff reports. Fewer columns is most of a 60,000-row read: each value read is an object.
_PAIRING_FIELDS = (
    "start",
    "end",
    "perms",
    "offset",
    "path",
    "deleted",
    "kind",
    "rss",
    "pss",
    "swap",
)

# A Region from a tuple of its fields, without a Python-level call per region.
_new_region = cast(Callable[[tuple[Any, ...]], Region], partial(tuple.__new__, Region))


def _read_regions(
    conn: Connection,
    where: str,
    params: tuple[int, ...],
    fields: Sequence[str] = Region._fields,
) -> tuple[list[Region], list[int]]:
    """The regions matching `where` (over `regions r`, `?` for each of `params`), in
    ascending address order, and their row ids. Fields not in `fields` are None."""
    quote = conn.dialect.identifier_preparer.quote
    select_list = ", ".join(["r.id", *(_SQL_OF_FIELD.get(f) or f"r.{quote(f)}" for f in fields)])
    result = conn.exec_driver_sql(
        f"SELECT {select_list} FROM regions r LEFT JOIN paths p ON p.id = r.path_id "
        f"WHERE {where.replace('?', placeholder(conn))}",
        params,
    )
    rows: Sequence[Any] = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    if not rows:
        return [], []
    # Sorted in Python (cheaper than SQLite's sorter at this size); stored starts are
    # shifted by 2**63, which keeps the order of the real ones.
    read: list[Any] = list(
        zip(*sorted(rows, key=itemgetter(1 + fields.index("start"))), strict=True)
    )
    ids: list[int] = list(read[0])
    by_field = dict(zip(fields, read[1:], strict=True))
    none: list[None] = [None] * len(ids)
    cols: list[Any] = []
    for f in Region._fields:
        col = by_field.get(f, none)
        if f in U64_REGION_FIELDS and col is not none:
            col = list(map(U64_SHIFT.__add__, col))
        elif f == "deleted" and col is not none:
            col = list(map(bool, col))
        cols.append(col)
    return list(map(_new_region, zip(*cols, strict=True))), ids


_ID_CHUNK = 500  # ids per IN (...): well inside every database's parameter limit


def _regions_by_id(conn: Connection, ids: Sequence[int]) -> dict[int, Region]:
    """Whole regions by row id."""
    found: dict[int, Region] = {}
    for i in range(0, len(ids), _ID_CHUNK):
        chunk = ids[i : i + _ID_CHUNK]
        regions_read, ids_read = _read_regions(
            conn, f"r.id IN ({', '.join('?' * len(chunk))})", tuple(chunk)
        )
        found.update(zip(ids_read, regions_read, strict=True))
    return found


_LAYOUT_WHERE = "r.process_id = ? AND r.first_seq <= ? AND (r.last_seq IS NULL OR r.last_seq >= ?)"


def layout(conn: Connection, snap: Snapshot) -> list[Region]:
    """Every region of a snapshot, in ascending address order."""
    return _read_regions(conn, _LAYOUT_WHERE, (snap.process_id, snap.seq, snap.seq))[0]


def changed_regions(
    conn: Connection, a: Snapshot, b: Snapshot
) -> tuple[list[Region], list[Region]]:
    """For two snapshots of one process (a before b): the regions of a that are gone by
    b, and the regions of b that a did not have. Unchanged rows are never read."""
    assert a.process_id == b.process_id and a.seq <= b.seq
    gone, _ = _read_regions(
        conn,
        "r.process_id = ? AND r.first_seq <= ? AND r.last_seq >= ? AND r.last_seq < ?",
        (a.process_id, a.seq, a.seq, b.seq),
    )
    came, _ = _read_regions(
        conn,
        "r.process_id = ? AND r.first_seq > ? AND r.first_seq <= ? "
        "AND (r.last_seq IS NULL OR r.last_seq >= ?)",
        (a.process_id, a.seq, b.seq, b.seq),
    )
    return gone, came


def paths_alive_at_both(
    conn: Connection, a: Snapshot, b: Snapshot, candidates: set[str]
) -> set[str]:
    """Which of `candidates` have a region unchanged from a to b (so exist at both)."""
    if not candidates:
        return set()
    query = (
        select(paths.c.text)
        .distinct()
        .select_from(regions.join(paths, regions.c.path_id == paths.c.id))
        .where(
            regions.c.process_id == a.process_id,
            regions.c.first_seq <= a.seq,
            or_(regions.c.last_seq.is_(None), regions.c.last_seq >= b.seq),
            paths.c.text.in_(sorted(candidates)),
        )
    )
    return {row.text for row in conn.execute(query)}


def snapshot_at(
    conn: Connection, when: datetime, pid: int | None = None, name: str | None = None
) -> Snapshot:
    """The latest snapshot taken at or before `when`, of the process selected."""
    candidates = list_snapshots(conn, SnapshotFilter(pid=pid, name=name, until=when))
    if not candidates:
        who = f" of pid {pid}" if pid is not None else f" matching {name!r}" if name else ""
        raise NotFoundError(f"nothing recorded{who} at or before {when.isoformat()}")
    processes_seen = {s.process_id: s for s in candidates}
    # A pid names one process at a time (if it was reused, the latest is meant); a name
    # pattern or nothing at all may match several, and then the person must choose.
    if pid is None and len(processes_seen) > 1:
        names = ", ".join(
            f"{s.pid} ({visible(s.command)})"
            for s in sorted(processes_seen.values(), key=lambda s: s.pid)[:10]
        )
        more = "" if len(processes_seen) <= 10 else f" and {len(processes_seen) - 10} more"
        raise NotFoundError(
            f"several processes were recorded by then: {names}{more}; choose one with "
            "--pid or --name"
        )
    return get_snapshot(conn, candidates[0].id)


def process_snapshots(
    conn: Connection, pid: int, since: datetime | None = None, until: datetime | None = None
) -> list[Snapshot]:
    """Every snapshot of processes with this pid, oldest first, with kind totals."""
    snaps = list_snapshots(conn, SnapshotFilter(pid=pid, since=since, until=until))
    snaps.reverse()
    return [replace(s, kinds=kind_totals(conn, s.id)) for s in snaps]


@dataclass(frozen=True)
class _Side:
    """One side's regions as read for pairing (in address order) and their row ids."""

    regions: list[Region]
    ids: list[int]

    @cached_property
    def starts(self) -> list[int]:
        return [r.start for r in self.regions]

    def row_of(self, region: Region) -> int:
        """The row id of one of these very region objects (equal tuples may repeat in
        an imported text, so the object itself is looked for among its start's)."""
        i = bisect.bisect_left(self.starts, region.start)
        while self.regions[i] is not region:
            i += 1
        return self.ids[i]


def diff_between(conn: Connection, a: Snapshot, b: Snapshot) -> Diff:
    """The diff from a to b, reading only changed rows when both are one process."""
    if same_process(a, b):
        lo, hi = (a, b) if a.seq <= b.seq else (b, a)
        gone, came = changed_regions(conn, lo, hi)
        both = paths_alive_at_both(conn, lo, hi, libraries(gone) | libraries(came))
        before, after = (gone, came) if lo is a else (came, gone)
        return diff_snapshots(
            a, b, before, after, "address", libraries(before) | both, libraries(after) | both
        )
    # Two different processes: every region takes part in the pairing, but only what
    # the diff reports is read whole.
    light_a, ids_a = _read_regions(
        conn, _LAYOUT_WHERE, (a.process_id, a.seq, a.seq), _PAIRING_FIELDS
    )
    light_b, ids_b = _read_regions(
        conn, _LAYOUT_WHERE, (b.process_id, b.seq, b.seq), _PAIRING_FIELDS
    )
    found = diff_snapshots(
        a, b, light_a, light_b, "identity", libraries(light_a), libraries(light_b)
    )
    side_a, side_b = _Side(light_a, ids_a), _Side(light_b, ids_b)
    wanted = [side_a.row_of(r) for r in found.removed]
    wanted += [side_b.row_of(r) for r in found.added]
    for c in found.changed:
        wanted += [side_a.row_of(c.before), side_b.row_of(c.after)]
    whole = _regions_by_id(conn, sorted(set(wanted)))

    def full(r: Region, side: _Side) -> Region:
        return whole[side.row_of(r)]

    return replace(
        found,
        added=tuple(full(r, side_b) for r in found.added),
        removed=tuple(full(r, side_a) for r in found.removed),
        changed=tuple(
            RegionChange(full(c.before, side_a), full(c.after, side_b), c.changes)
            for c in found.changed
        ),
    )
