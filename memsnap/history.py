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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property, partial
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import BigInteger, Connection, Row, Select, literal, or_, select

from memsnap.diff import Diff, RegionChange, diff_snapshots, libraries, same_process
from memsnap.errors import MemsnapError, NotFoundError, SeveralProcesses
from memsnap.match import compile_name, name_matches
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
    host: str | None = None


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


def list_snapshots(conn: Connection, flt: SnapshotFilter) -> list[Snapshot]:
    """Snapshots matching the filter, newest first."""
    query = _snapshot_query().order_by(snapshots.c.taken_at.desc(), snapshots.c.id.desc())
    if flt.pid is not None:
        query = query.where(processes.c.pid == flt.pid)
    if flt.host is not None:
        query = query.where(processes.c.host == flt.host)
    if flt.since is not None:
        query = query.where(snapshots.c.taken_at >= flt.since)
    if flt.until is not None:
        query = query.where(snapshots.c.taken_at <= flt.until)
    pattern = compile_name(flt.name) if flt.name is not None else None
    if flt.limit is not None and pattern is None:
        query = query.limit(flt.limit)
    found = []
    # A process's names are the same in each of its snapshots: matched once per process
    # (a pattern may be slow on a long command line).
    matched: dict[int, bool] = {}
    for row in conn.execute(query):
        snap = _snapshot(row)
        if pattern is not None:
            hit = matched.get(snap.process_id)
            if hit is None:
                hit = matched[snap.process_id] = name_matches(
                    pattern, snap.command, snap.exe, snap.cmdline
                )
            if not hit:
                continue
        found.append(snap)
        if flt.limit is not None and len(found) >= flt.limit:
            break
    return found


def kind_totals(conn: Connection, snapshot_id: int) -> dict[str, Totals]:
    rows = conn.execute(select(snapshot_kinds).where(snapshot_kinds.c.snapshot_id == snapshot_id))
    return {r.kind: Totals(r.regions, r.size, r.rss, r.pss, r.swap, r.uss) for r in rows}


def get_snapshot(conn: Connection, snapshot_id: int) -> Snapshot:
    # Compared as a BIGINT: an id past what PostgreSQL's INTEGER ids hold is simply not
    # there (as an INTEGER parameter it would be a database error).
    wanted = literal(snapshot_id, BigInteger)
    row = conn.execute(_snapshot_query().where(snapshots.c.id == wanted)).first()
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
    conn: Connection,
    when: datetime,
    pid: int | None = None,
    name: str | None = None,
    host: str | None = None,
) -> Snapshot:
    """The latest snapshot taken at or before `when`, of the one process selected (by
    pid, name pattern, or because only one was recorded by then), on `host` if given."""
    candidates = list_snapshots(conn, SnapshotFilter(pid=pid, name=name, until=when, host=host))
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
    return get_snapshot(conn, candidates[0].id)


def history_of(
    conn: Connection,
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
    snaps = list_snapshots(
        conn, SnapshotFilter(pid=pid, name=name, since=since, until=until, host=host)
    )
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
    conn: Connection,
    pid: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    name: str | None = None,
    host: str | None = None,
) -> list[Snapshot]:
    """A replay's steps: every snapshot of the one process selected, oldest first,
    with kind totals."""
    snaps = history_of(conn, pid, name, since, until, host=host)
    return [replace(s, kinds=kind_totals(conn, s.id)) for s in reversed(snaps)]


def last_two(conn: Connection, pid: int) -> tuple[Snapshot, Snapshot]:
    """The last two snapshots of the process with this pid (the one process it names)."""
    snaps = history_of(conn, pid, choose="diff two of their snapshots by id (memsnap diff A B)")
    if len(snaps) < 2:
        raise MemsnapError(
            f"pid {pid} has one snapshot ({snaps[0].id}): record it again to have a change"
        )
    return get_snapshot(conn, snaps[1].id), get_snapshot(conn, snaps[0].id)


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


# A snapshot with more regions than this is shown a batch at a time (`iter_layout`)
# rather than read whole: above the most a default kernel allows (vm.max_map_count
# 65,530), so a normal process keeps the faster whole read.
STREAM_REGIONS = 100_000
_STREAM_BATCH = 5000


def iter_layout(
    conn: Connection, snap: Snapshot, *, descending: bool = False, batch: int | None = None
) -> Iterator[list[Region]]:
    """Every region of a snapshot, a batch at a time, in address order (highest first
    when `descending`): the database sorts, and only one batch is held at a time (on
    PostgreSQL through a server-side cursor)."""
    quote = conn.dialect.identifier_preparer.quote
    fields = Region._fields
    select_list = ", ".join(_SQL_OF_FIELD.get(f) or f"r.{quote(f)}" for f in fields)
    order = "DESC" if descending else "ASC"
    where = _LAYOUT_WHERE.replace("?", placeholder(conn))
    result = conn.execution_options(stream_results=True).exec_driver_sql(
        f"SELECT {select_list} FROM regions r LEFT JOIN paths p ON p.id = r.path_id "
        f"WHERE {where} ORDER BY r.start_addr {order}, r.id {order}",
        (snap.process_id, snap.seq, snap.seq),
    )
    shifted = [fields.index(f) for f in U64_REGION_FIELDS]
    deleted = fields.index("deleted")
    try:
        # Through the result, not its driver cursor: a server-side cursor's result has
        # already buffered the first rows.
        for rows in result.partitions(batch or _STREAM_BATCH):
            columns: list[Any] = list(zip(*rows, strict=True))
            for i in shifted:
                columns[i] = map(U64_SHIFT.__add__, columns[i])
            columns[deleted] = map(bool, columns[deleted])
            yield list(map(_new_region, zip(*columns, strict=True)))
    finally:
        result.close()
