"""Writing one snapshot: a process, its classified regions, its totals, in one transaction.

A new snapshot k+1 of a process already recorded compares its regions with the rows still
open (`last_seq IS NULL`): an identical row stays open and costs nothing; a row that
vanished or changed gets `last_seq = k`; a new or changed region is inserted with
`first_seq = k+1`. Storage so grows with change, not with the number of snapshots.

Two writers recording one process must not both take seq k+1: the transaction is taken
with BEGIN IMMEDIATE on SQLite and the process row is locked FOR UPDATE on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from memsnap.model import SIZE_ATTRS, Mapping, ProcessIdentity, Totals
from memsnap.store.schema import paths, processes, regions, snapshot_kinds, snapshots

_CHUNK = 500
# Every stored field of a region, in the order `_region_key` lists them: a stored row
# and a new mapping are the same region exactly when these are all equal.
_KEY_COLUMNS = (
    regions.c.start_addr,
    regions.c.end_addr,
    regions.c.perms,
    regions.c.offset,
    regions.c.dev,
    regions.c.inode,
    paths.c.text,
    regions.c.deleted,
    regions.c.kind,
    *(regions.c[a] for a in SIZE_ATTRS),
    regions.c.vm_flags,
)


def path_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _insert_ignoring_conflicts(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping those a unique constraint says exist (a concurrent writer
    may have just added the same path or process)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - other backends are not supported
        stmt = insert(table)
    conn.execute(stmt, rows)


def intern_paths(conn: Connection, texts: Iterable[str]) -> dict[str, int]:
    """The id of each path, inserting those not stored yet."""
    by_digest = {path_digest(t): t for t in set(texts)}
    ids: dict[str, int] = {}
    digests = list(by_digest)
    for i in range(0, len(digests), _CHUNK):
        chunk = digests[i : i + _CHUNK]
        for row in conn.execute(
            select(paths.c.digest, paths.c.id).where(paths.c.digest.in_(chunk))
        ):
            ids[by_digest[row.digest]] = row.id
    missing = [{"digest": d, "text": t} for d, t in by_digest.items() if t not in ids]
    if missing:
        _insert_ignoring_conflicts(conn, paths, missing)
        for i in range(0, len(missing), _CHUNK):
            chunk = [m["digest"] for m in missing[i : i + _CHUNK]]
            for row in conn.execute(
                select(paths.c.digest, paths.c.id).where(paths.c.digest.in_(chunk))
            ):
                ids[by_digest[row.digest]] = row.id
    return ids


def process_id(
    conn: Connection,
    identity: ProcessIdentity,
    command: str,
    cmdline: Sequence[str],
    exe: str | None,
) -> int:
    """The row of this process, created on first sight and locked for this transaction.

    An imported text has no boot id or start time: it can never be proven to be the
    same process as another snapshot, so each import gets a process row of its own.
    """
    values = {
        "host": identity.host,
        "boot_id": identity.boot_id,
        "pid": identity.pid,
        "start_ticks": identity.start_ticks,
        "exe": exe,
        "command": command,
        "cmdline": json.dumps(list(cmdline)),
    }
    if identity.boot_id is None or identity.start_ticks is None:
        return int(
            conn.execute(insert(processes).values(values).returning(processes.c.id)).scalar_one()
        )
    _insert_ignoring_conflicts(conn, processes, [values])
    query = select(processes.c.id).where(
        processes.c.host == identity.host,
        processes.c.boot_id == identity.boot_id,
        processes.c.pid == identity.pid,
        processes.c.start_ticks == identity.start_ticks,
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return int(conn.execute(query).scalar_one())


def sum_totals(items: Iterable[Mapping]) -> Totals:
    count = size = 0
    sums: dict[str, int | None] = {"rss": None, "pss": None, "swap": None}
    for m in items:
        count += 1
        size += m.end - m.start
        for attr in sums:
            value = getattr(m, attr)
            if value is not None:
                sums[attr] = (sums[attr] or 0) + value
    return Totals(regions=count, size=size, rss=sums["rss"], pss=sums["pss"], swap=sums["swap"])


def _region_key(m: Mapping, kind: str) -> tuple[Any, ...]:
    return (
        m.start,
        m.end,
        m.perms,
        m.offset,
        m.dev,
        m.inode,
        m.path,
        m.deleted,
        kind,
        *(getattr(m, a) for a in SIZE_ATTRS),
        m.vm_flags,
    )


def save_snapshot(
    conn: Connection,
    *,
    identity: ProcessIdentity,
    command: str,
    cmdline: Sequence[str],
    exe: str | None,
    taken_at: datetime,
    label: str | None,
    source: str,
    page_size: int,
    kernel: str | None,
    has_smaps: bool,
    mappings: Sequence[Mapping],
    kinds: Sequence[str],
) -> int:
    """Store one snapshot inside the caller's transaction; returns its id."""
    pid_row = process_id(conn, identity, command, cmdline, exe)
    seq = (
        int(
            conn.execute(
                select(func.coalesce(func.max(snapshots.c.seq), 0)).where(
                    snapshots.c.process_id == pid_row
                )
            ).scalar_one()
        )
        + 1
    )
    path_ids = intern_paths(conn, (m.path for m in mappings if m.path is not None))

    # Identical lines can occur in an imported text; each must still be stored.
    wanted: dict[tuple[Any, ...], list[int]] = {}
    for i, (m, kind) in enumerate(zip(mappings, kinds, strict=True)):
        wanted.setdefault(_region_key(m, kind), []).append(i)
    vanished: list[int] = []
    if seq > 1:
        open_rows = conn.execute(
            select(*_KEY_COLUMNS, regions.c.id)
            .select_from(regions.outerjoin(paths, regions.c.path_id == paths.c.id))
            .where(regions.c.process_id == pid_row, regions.c.last_seq.is_(None))
        )
        for row in open_rows:
            still = wanted.get(tuple(row[:-1]))
            if still:
                still.pop()
            else:
                vanished.append(row.id)
    if vanished:
        conn.execute(
            update(regions).where(regions.c.id == bindparam("rid")).values(last_seq=seq - 1),
            [{"rid": rid} for rid in vanished],
        )
    new_rows = [
        {
            "process_id": pid_row,
            "first_seq": seq,
            "last_seq": None,
            "start_addr": m.start,
            "end_addr": m.end,
            "perms": m.perms,
            "offset": m.offset,
            "dev": m.dev,
            "inode": m.inode,
            "path_id": None if m.path is None else path_ids[m.path],
            "deleted": m.deleted,
            "kind": kinds[i],
            **{a: getattr(m, a) for a in SIZE_ATTRS},
            "vm_flags": m.vm_flags,
        }
        for indexes in wanted.values()
        for i in indexes
        for m in (mappings[i],)
    ]
    if new_rows:
        conn.execute(insert(regions), new_rows)

    totals = sum_totals(mappings)
    snapshot_id = int(
        conn.execute(
            insert(snapshots)
            .values(
                process_id=pid_row,
                seq=seq,
                taken_at=taken_at,
                label=label,
                source=source,
                page_size=page_size,
                kernel=kernel,
                has_smaps=has_smaps,
                regions=totals.regions,
                size=totals.size,
                rss=totals.rss,
                pss=totals.pss,
                swap=totals.swap,
            )
            .returning(snapshots.c.id)
        ).scalar_one()
    )
    by_kind: dict[str, list[Mapping]] = {}
    for m, kind in zip(mappings, kinds, strict=True):
        by_kind.setdefault(kind, []).append(m)
    kind_rows = []
    for kind, members in by_kind.items():
        t = sum_totals(members)
        kind_rows.append(
            {
                "snapshot_id": snapshot_id,
                "kind": kind,
                "regions": t.regions,
                "size": t.size,
                "rss": t.rss,
                "pss": t.pss,
                "swap": t.swap,
            }
        )
    if kind_rows:
        conn.execute(insert(snapshot_kinds), kind_rows)
    return snapshot_id
