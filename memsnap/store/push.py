"""Copying snapshots to another database: the store side of `memsnap push`.

A snapshot is identified across databases by its process (host, boot id, pid, start
time) and its seq within that process, never by its row id. The target is asked once
for the latest seq of each process of the local hosts it holds; every local snapshot
above it (taken at or after `since`, when given) is copied, in seq order, one
transaction per snapshot, with the very same seq. A push killed halfway so leaves the
target holding whole snapshots only, each process's a prefix of what was to be copied,
and the next push starts after the target's own latest seq: nothing twice, nothing
lost. Snapshots the target had and pruned since are not copied again (they are below
its latest seq).

Incremental: both sides are asked per process, not per snapshot. Each side's latest seq
of a process is one indexed look-up (the unique (process_id, seq) index); locally, only
the snapshots above the target's latest are read, as an indexed range of the processes
that have any, and the ones already there are counted, never read. A push after an hour
of recording so reads that hour's snapshots, not the month before it.

An import has no boot id or start time: each is a process of its own, one snapshot.
It is identified by host, pid, the time it was taken and its region count and virtual
size: the same text imported twice with the same `--taken-at` is the same snapshot to
push. Imports are few (texts imported by hand); each is looked at on every push.

The local database is only read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from memsnap.model import ProcessIdentity, Region, Snapshot, SnapshotInfo, columns_of
from memsnap.store.rawsql import placeholder
from memsnap.store.reader import snapshots_after
from memsnap.store.schema import processes, snapshots
from memsnap.store.writer import SeqTaken, save_pushed_unchanged, save_snapshot

LiveKey = tuple[str, str, int, int]
ImportKey = tuple[str, int, datetime, int, int]


_CHUNK = 500  # hosts per IN (...): well inside every database's parameter limit


@dataclass
class PushResult:
    copied: int = 0
    already_there: int = 0


@dataclass
class Pending:
    """What a push has to copy: the local snapshots the target lacks, in (process, seq)
    order, and the number of local snapshots it has already."""

    snapshots: list[Snapshot] = field(default_factory=list)
    already_there: int = 0
    # For each process with snapshots to copy: the seq of the target's latest snapshot
    # of it, when the local database still has that snapshot (so can tell whether the
    # next one's layout is the same: `unchanged_since`).
    at_target: dict[int, int] = field(default_factory=dict)


def _utc(when: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC ones)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _is_import(identity: ProcessIdentity) -> bool:
    return identity.boot_id is None or identity.start_ticks is None


def _import_key(snap: Snapshot) -> ImportKey:
    return (snap.host, snap.pid, _utc(snap.taken_at), snap.totals.regions, snap.totals.size)


def _latest_seq() -> Any:
    """Each process's latest seq, as a column of a query over `processes`: an index
    look-up per process, where a GROUP BY over snapshots would read them all."""
    return (
        select(func.max(snapshots.c.seq))
        .where(snapshots.c.process_id == processes.c.id)
        .scalar_subquery()
    )


def local_hosts(conn: Connection) -> list[str]:
    """The hosts the local database holds processes of."""
    return sorted(conn.execute(select(processes.c.host).distinct()).scalars())


def target_state(
    conn: Connection, hosts: Sequence[str] | None = None
) -> tuple[dict[LiveKey, int], set[ImportKey]]:
    """What the target holds of `hosts` (all when None): each live process's latest
    seq, and its imports' keys. A central database's other hosts are not read."""
    latest: dict[LiveKey, int] = {}
    imports: set[ImportKey] = set()
    chunks = (
        [None] if hosts is None else [hosts[i : i + _CHUNK] for i in range(0, len(hosts), _CHUNK)]
    )
    for chunk in chunks:
        live = select(
            processes.c.host,
            processes.c.boot_id,
            processes.c.pid,
            processes.c.start_ticks,
            _latest_seq().label("seq"),
        ).where(processes.c.boot_id.is_not(None), processes.c.start_ticks.is_not(None))
        imported = (
            select(
                processes.c.host,
                processes.c.pid,
                snapshots.c.taken_at,
                snapshots.c.regions,
                snapshots.c.size,
            )
            .select_from(processes.join(snapshots, snapshots.c.process_id == processes.c.id))
            .where((processes.c.boot_id.is_(None)) | (processes.c.start_ticks.is_(None)))
        )
        if chunk is not None:
            live = live.where(processes.c.host.in_(chunk))
            imported = imported.where(processes.c.host.in_(chunk))
        for host, boot, pid, ticks, seq in conn.execute(live):
            if seq is not None:
                key = (host, boot, pid, ticks)
                latest[key] = max(seq, latest.get(key, 0))
        for host, pid, taken_at, regions, size in conn.execute(imported):
            imports.add((host, pid, _utc(taken_at), regions, size))
    return latest, imports


def unpushed(
    conn: Connection,
    latest: dict[LiveKey, int],
    imports: set[ImportKey],
    since: datetime | None = None,
) -> Pending:
    """The local snapshots the target does not have (`target_state`), each process's
    in seq order, and how many it has: only the new snapshots are read."""
    pending = Pending()
    local = select(
        processes.c.id,
        processes.c.host,
        processes.c.boot_id,
        processes.c.pid,
        processes.c.start_ticks,
        _latest_seq().label("seq"),
    ).order_by(processes.c.id)
    for row in conn.execute(local).all():
        if row.seq is None:
            continue
        if row.boot_id is None or row.start_ticks is None:
            new = [
                s for s in snapshots_after(conn, row.id, 0, since) if _import_key(s) not in imports
            ]
        else:
            have = latest.get((row.host, row.boot_id, row.pid, row.start_ticks), 0)
            new = snapshots_after(conn, row.id, have, since) if row.seq > have else []
            if new and have and conn.execute(_HAS_SEQ, {"p": row.id, "seq": have}).first():
                pending.at_target[row.id] = have
        pending.snapshots += new
    counted = select(func.count()).select_from(snapshots)
    if since is not None:
        counted = counted.where(snapshots.c.taken_at >= since)
    pending.already_there = int(conn.execute(counted).scalar_one()) - len(pending.snapshots)
    return pending


_HAS_SEQ = select(snapshots.c.id).where(
    snapshots.c.process_id == bindparam("p"), snapshots.c.seq == bindparam("seq")
)
_CHANGED = (
    # A region row that came after `before` up to `seq`, or one that went in between:
    # the layout at `seq` is that at `before` when there is neither. Two indexed ranges.
    "SELECT 1 FROM regions WHERE process_id = ? AND first_seq > ? AND first_seq <= ?",
    "SELECT 1 FROM regions WHERE process_id = ? AND last_seq >= ? AND last_seq < ?",
)


def unchanged_since(conn: Connection, snap: Snapshot, before: int) -> bool:
    """Whether the local snapshot's layout is that of its process's snapshot at seq
    `before` (which must still be there: a prune may have taken region rows that only
    snapshots between the two had, never one that a remaining snapshot has)."""
    mark = placeholder(conn)
    for sql in _CHANGED:
        found = conn.exec_driver_sql(
            f"{sql.replace('?', mark)} LIMIT 1", (snap.process_id, before, snap.seq)
        ).first()
        if found is not None:
            return False
    return True


def copy_snapshot(
    conn: Connection,
    snap: Snapshot,
    regions: Sequence[Region] | Callable[[], Sequence[Region]],
    after: int | None = None,
    replaced: str | None = None,
) -> int | None:
    """Write one snapshot into the target, in the caller's transaction, with its own seq;
    None when the target has gone past that seq since it was asked (another push of the
    same database ran meanwhile): then it is there already.

    `after`: the seq of a snapshot of the process whose layout this one has (locally,
    `unchanged_since`); when it is the target's latest, the copy is one row sharing its
    totals (`writer.save_pushed_unchanged`) and `regions` (then best a function giving
    them) is not asked for. `replaced`: the source's stored replaced objects, which
    `check` on the target reads as it would locally."""
    info = SnapshotInfo(
        identity=snap.identity,
        command=snap.command,
        cmdline=snap.cmdline,
        exe=snap.exe,
        taken_at=_utc(snap.taken_at),
        label=snap.label,
        source=snap.source,
        page_size=snap.page_size,
        kernel=snap.kernel,
        has_smaps=snap.has_smaps,
        replaced=replaced,
    )
    try:
        if after is not None and not _is_import(snap.identity):
            copied = save_pushed_unchanged(conn, info, snap.seq, after, snap.totals)
            if copied is not None:
                return copied
    except SeqTaken:
        return None
    if callable(regions):
        regions = regions()
    # A region's fields are a mapping's, then its kind: the writer reads the former.
    columns = columns_of(regions)
    kinds = [r.kind for r in regions]
    try:
        snapshot_id, _ = save_snapshot(
            conn, info, columns, kinds, seq=None if _is_import(snap.identity) else snap.seq
        )
    except SeqTaken:
        return None
    return snapshot_id
