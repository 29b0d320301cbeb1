"""Copying snapshots to another database: the store side of `memsnap push`.

A snapshot is identified across databases by its process (host, boot id, pid, start
time) and its seq within that process, never by its row id. The target is asked once
for the latest seq of each process it holds; every local snapshot above it (taken at or
after `since`, when given) is copied, in seq order, one transaction per snapshot, with
the very same seq. A push killed halfway so leaves the target holding whole snapshots
only, each process's a prefix of what was to be copied, and the next push starts after
the target's own latest seq: nothing twice, nothing lost. Snapshots the target had and
pruned since are not copied again (they are below its latest seq).

An import has no boot id or start time: each is a process of its own, one snapshot.
It is identified by host, pid, the time it was taken and its region count and virtual
size: the same text imported twice with the same `--taken-at` is the same snapshot to
push.

The local database is only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from memsnap.model import ProcessIdentity, Region, Snapshot, SnapshotInfo, columns_of
from memsnap.store.schema import processes, snapshots
from memsnap.store.writer import SeqTaken, save_snapshot

LiveKey = tuple[str, str, int, int]
ImportKey = tuple[str, int, datetime, int, int]


@dataclass
class PushResult:
    copied: int = 0
    already_there: int = 0


def _utc(when: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC ones)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _is_import(identity: ProcessIdentity) -> bool:
    return identity.boot_id is None or identity.start_ticks is None


def _import_key(snap: Snapshot) -> ImportKey:
    return (snap.host, snap.pid, _utc(snap.taken_at), snap.totals.regions, snap.totals.size)


def target_state(conn: Connection) -> tuple[dict[LiveKey, int], set[ImportKey]]:
    """What the target holds: each live process's latest seq, and its imports' keys."""
    latest: dict[LiveKey, int] = {}
    live = (
        select(
            processes.c.host,
            processes.c.boot_id,
            processes.c.pid,
            processes.c.start_ticks,
            func.max(snapshots.c.seq),
        )
        .select_from(processes.join(snapshots, snapshots.c.process_id == processes.c.id))
        .where(processes.c.boot_id.is_not(None), processes.c.start_ticks.is_not(None))
        .group_by(processes.c.id)
    )
    for host, boot, pid, ticks, seq in conn.execute(live):
        key = (host, boot, pid, ticks)
        latest[key] = max(seq, latest.get(key, 0))
    imports: set[ImportKey] = set()
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
    for host, pid, taken_at, regions, size in conn.execute(imported):
        imports.add((host, pid, _utc(taken_at), regions, size))
    return latest, imports


def already_there(snap: Snapshot, latest: dict[LiveKey, int], imports: set[ImportKey]) -> bool:
    """Whether the target holds this local snapshot (by identity and seq, never id)."""
    ident = snap.identity
    if _is_import(ident):
        return _import_key(snap) in imports
    key = (ident.host, ident.boot_id or "", ident.pid, ident.start_ticks or 0)
    return snap.seq <= latest.get(key, 0)


def copy_snapshot(conn: Connection, snap: Snapshot, regions: Sequence[Region]) -> int | None:
    """Write one snapshot into the target, in the caller's transaction, with its own seq;
    None when the target has gone past that seq since it was asked (another push of the
    same database ran meanwhile): then it is there already."""
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
    )
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
