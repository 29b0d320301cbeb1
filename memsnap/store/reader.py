"""Reading what is stored: snapshots, layouts, the regions changed between two of them.

Every function takes an open connection and returns values from `memsnap.model`;
nothing SQLAlchemy leaves this module. The rest of memsnap reads through
`memsnap.store.repository`, which owns the connection and the errors. The layout at snapshot k of a
process is one indexed query (`first_seq <= k` and `last_seq` NULL or `>= k`); the
regions that differ between two snapshots of one process are two more, which read only
rows that changed in between.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import partial
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import BigInteger, Connection, Row, Select, bindparam, func, literal, or_, select

from memsnap.errors import NotFoundError
from memsnap.match import compile_name, name_matches
from memsnap.model import (
    PAIRING_FIELDS,
    REGION_FIELDS,
    ProcessIdentity,
    Region,
    Snapshot,
    SnapshotFilter,
    Totals,
)
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


# A snapshot's per-kind totals: its own rows, or those of the snapshot it names.
_KIND_TOTALS = (
    select(snapshot_kinds)
    .select_from(
        snapshots.join(
            snapshot_kinds,
            snapshot_kinds.c.snapshot_id == func.coalesce(snapshots.c.kinds_from, snapshots.c.id),
        )
    )
    .where(snapshots.c.id == bindparam("snapshot"))
)


def kind_totals(conn: Connection, snapshot_id: int) -> dict[str, Totals]:
    rows = conn.execute(_KIND_TOTALS, {"snapshot": snapshot_id})
    return {r.kind: Totals(r.regions, r.size, r.rss, r.pss, r.swap, r.uss) for r in rows}


def snapshots_after(
    conn: Connection, process_row: int, seq: int, since: datetime | None = None
) -> list[Snapshot]:
    """The snapshots of one process with a seq above `seq` (taken at or after `since`,
    when given), without kind totals, in seq order: an indexed range, whatever the
    history before it holds."""
    query = _snapshot_query().where(snapshots.c.process_id == process_row, snapshots.c.seq > seq)
    if since is not None:
        query = query.where(snapshots.c.taken_at >= since)
    return list(map(_snapshot, conn.execute(query.order_by(snapshots.c.seq))))


def replaced_of(conn: Connection, snapshot_id: int) -> str | None:
    """The replaced executable objects stored with a snapshot (`snapshots.replaced`,
    what `check`'s replaced-code reads), as stored: a push carries them over."""
    row = conn.execute(select(snapshots.c.replaced).where(snapshots.c.id == snapshot_id)).first()
    return None if row is None else row.replaced


def snapshots_by_id(conn: Connection, ids: Sequence[int]) -> list[Snapshot]:
    """The snapshots of `ids` (without kind totals), exactly as `list` describes them."""
    found: list[Snapshot] = []
    for i in range(0, len(ids), _ID_CHUNK):
        chunk = ids[i : i + _ID_CHUNK]
        found += map(_snapshot, conn.execute(_snapshot_query().where(snapshots.c.id.in_(chunk))))
    return found


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
_SQL_OF_FIELD = {
    f.name: "p.text" if f.spec.sql == "path" else f"r.{f.column}"
    for f in REGION_FIELDS
    if f.column != f.name
}
_BOOL_FIELDS = {f.name for f in REGION_FIELDS if f.spec.sql == "bool"}
# What pairing the regions of two different processes looks at (diff.IDENTITY_FIELDS,
# the pairing key, the libraries): every other field is only read for the regions a
# diff reports. Fewer columns is most of a 60,000-row read: each value read is an object.
_PAIRING_FIELDS = PAIRING_FIELDS

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
        elif f in _BOOL_FIELDS and col is not none:
            col = list(map(bool, col))
        cols.append(col)
    return list(map(_new_region, zip(*cols, strict=True))), ids


_ID_CHUNK = 500  # ids per IN (...): well inside every database's parameter limit


def regions_by_id(conn: Connection, ids: Sequence[int]) -> dict[int, Region]:
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


def pairing_layout(conn: Connection, snap: Snapshot) -> tuple[list[Region], list[int]]:
    """A snapshot's regions with only the fields pairing needs (the others None), in
    ascending address order, and their row ids (to read whole what a diff reports)."""
    return _read_regions(
        conn, _LAYOUT_WHERE, (snap.process_id, snap.seq, snap.seq), _PAIRING_FIELDS
    )


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
