"""Forgetting snapshots: the store side of `memsnap prune`.

Each process is pruned in one transaction of its own, so a prune killed halfway has
either pruned a process whole or left it as it was: it never loses a snapshot the policy
keeps. Inside that transaction (taken up front on SQLite; the process row locked on
PostgreSQL, as a recording locks it, so the two queue rather than interleave):

1. the process's snapshots are read and the policy (`memsnap.retention`) names the kept;
2. the others are deleted (their per-kind totals go with them, ON DELETE CASCADE); a
   removed snapshot's per-kind rows that kept snapshots share (`snapshots.kinds_from`)
   first move to the earliest of those, which the others then name;
3. a region row lives from `first_seq` to `last_seq` (NULL: still open): it is deleted
   when no kept snapshot's seq lies in that range. The bounds of the rows that stay are
   left as they are: the layout at every kept snapshot is then the very same rows;
4. the paths only those regions used are deleted.

The space is then given back: SQLite rewrites the file (VACUUM, outside any transaction,
after a WAL checkpoint so the file's size says what the data takes); PostgreSQL's plain
VACUUM makes the space reusable, which its relation sizes show only where whole pages at
a table's end came free. The bytes freed are measured, not estimated: the file's size
before and after on SQLite, the summed `pg_total_relation_size` of memsnap's tables on
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import partial
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError, OperationalError

from memsnap.model import Snapshot
from memsnap.retention import Policy, Stamp, keep
from memsnap.store.database import Database, sqlite_file
from memsnap.store.rawsql import placeholder
from memsnap.store.reader import snapshots_by_id
from memsnap.store.schema import metadata, processes, snapshots

_CHUNK = 500  # ids per IN (...): well inside every database's parameter limit


@dataclass(frozen=True, slots=True)
class Selection:
    """Which processes to prune: all of them, or those matching every filter given."""

    pid: int | None = None
    name: re.Pattern[str] | None = None
    host: str | None = None


@dataclass
class PruneResult:
    removed: list[Snapshot] = field(default_factory=list)
    kept: int = 0
    processes: int = 0
    freed_bytes: int = 0
    vacuum_error: str | None = None


def _chosen_processes(conn: Connection, chosen: Selection) -> list[int]:
    from memsnap.match import name_matches

    query = select(processes.c.id, processes.c.command, processes.c.exe, processes.c.cmdline)
    if chosen.pid is not None:
        query = query.where(processes.c.pid == chosen.pid)
    if chosen.host is not None:
        query = query.where(processes.c.host == chosen.host)
    found = []
    for row in conn.execute(query.order_by(processes.c.id)):
        if chosen.name is not None:
            args = json.loads(row.cmdline)
            if not name_matches(chosen.name, row.command, row.exe, args):
                continue
        found.append(int(row.id))
    return found


def _lock_process(conn: Connection, process_row: int) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(processes.c.id).where(processes.c.id == process_row).with_for_update())


def _in_chunks(
    conn: Connection, sql: str, ids: Sequence[int], before: tuple[int, ...] = ()
) -> None:
    """Run `sql` (holding `{ids}` where the id list goes) for the ids a chunk at a time."""
    mark = placeholder(conn)
    for i in range(0, len(ids), _CHUNK):
        chunk = tuple(ids[i : i + _CHUNK])
        conn.exec_driver_sql(sql.format(ids=", ".join([mark] * len(chunk))), before + chunk)


def _rehome_kinds(
    conn: Connection, process_row: int, rows: Sequence[Any], removed: set[int]
) -> None:
    """Move the per-kind rows of removed snapshots that kept snapshots share to the
    earliest of those kept (`rows`: the process's snapshots, id, seq and kinds_from)."""
    mark = placeholder(conn)
    heirs: dict[int, int] = {}  # removed owner -> the kept snapshot taking its rows
    for row in sorted(rows, key=lambda r: r.seq):
        if row.id not in removed and row.kinds_from in removed and row.kinds_from not in heirs:
            heirs[row.kinds_from] = row.id
    for owner, heir in heirs.items():
        conn.exec_driver_sql(
            f"UPDATE snapshot_kinds SET snapshot_id = {mark} WHERE snapshot_id = {mark}",
            (heir, owner),
        )
        conn.exec_driver_sql(f"UPDATE snapshots SET kinds_from = NULL WHERE id = {mark}", (heir,))
        conn.exec_driver_sql(
            f"UPDATE snapshots SET kinds_from = {mark} "
            f"WHERE process_id = {mark} AND kinds_from = {mark}",
            (heir, process_row, owner),
        )


def _forget(
    conn: Connection, process_row: int, rows: Sequence[Any], removed_ids: list[int]
) -> None:
    """Delete the snapshots (their shared per-kind rows moved to a kept one first), the
    region rows no remaining snapshot of the process lies in, and the paths nothing uses
    any more."""
    mark = placeholder(conn)
    _rehome_kinds(conn, process_row, rows, set(removed_ids))
    _in_chunks(conn, "DELETE FROM snapshots WHERE id IN ({ids})", removed_ids)
    # A region row is needed while any remaining snapshot's seq lies in its range; the
    # latest snapshot always remains, so an open row (last_seq NULL) always is.
    gone = conn.exec_driver_sql(
        f"DELETE FROM regions WHERE process_id = {mark} AND last_seq IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.process_id = regions.process_id "
        "AND s.seq >= regions.first_seq AND s.seq <= regions.last_seq) "
        "RETURNING path_id",
        (process_row,),
    )
    path_ids = sorted({row[0] for row in gone if row[0] is not None})
    if not path_ids:
        return
    # A recorder elsewhere may remember a path's id for as long as its connection
    # lives (`writer.intern_paths`). A deleted id it still uses then fails a foreign key
    # and the recorder looks again (`Database.write`); but an id handed out twice would
    # silently give its regions another path. SQLite gives a new row the highest id
    # plus one, so the row with the highest id is never deleted: no id then comes back.
    # Another transaction may also start using one of these paths at any moment (on
    # PostgreSQL, concurrently): then that path stays, the rest of the prune does not
    # fail, and a later prune takes it.
    try:
        with conn.begin_nested():
            _in_chunks(
                conn,
                "DELETE FROM paths WHERE id IN ({ids}) "
                "AND id < (SELECT MAX(newest.id) FROM paths newest) AND id NOT IN "
                "(SELECT path_id FROM regions WHERE path_id IS NOT NULL)",
                path_ids,
            )
    except IntegrityError:
        pass


def _prune_one(
    conn: Connection,
    process_row: int,
    policy: Policy,
    tz: tzinfo | None,
    now: datetime,
    dry_run: bool,
) -> tuple[list[Snapshot], int]:
    _lock_process(conn, process_row)
    rows = conn.execute(
        select(snapshots.c.id, snapshots.c.seq, snapshots.c.taken_at, snapshots.c.kinds_from).where(
            snapshots.c.process_id == process_row
        )
    ).all()
    kept_seqs = keep([Stamp(r.seq, r.taken_at) for r in rows], policy, tz, now)
    removed_ids = sorted(r.id for r in rows if r.seq not in kept_seqs)
    removed = snapshots_by_id(conn, removed_ids)
    if removed_ids and not dry_run:
        _forget(conn, process_row, rows, removed_ids)
    return removed, len(rows) - len(removed_ids)


def prune(
    db: Database,
    policy: Policy,
    chosen: Selection,
    tz: tzinfo | None,
    now: datetime,
    dry_run: bool = False,
    after_each: Callable[[int], None] | None = None,
) -> PruneResult:
    """Apply `policy` to every chosen process, one transaction each; then give the
    space back. `after_each(process_row)` is called after each process's commit."""
    result = PruneResult()
    with db.reading() as conn:
        chosen_rows = _chosen_processes(conn, chosen)
    before = None if dry_run else space_used(db)
    for process_row in chosen_rows:
        if dry_run:
            with db.reading() as conn:
                removed, kept = _prune_one(conn, process_row, policy, tz, now, True)
        else:
            removed, kept = db.write(
                partial(
                    _prune_one,
                    process_row=process_row,
                    policy=policy,
                    tz=tz,
                    now=now,
                    dry_run=False,
                )
            )
        result.removed += removed
        result.kept += kept
        result.processes += 1
        if after_each is not None:
            after_each(process_row)
    result.removed.sort(key=lambda s: (s.taken_at, s.id), reverse=True)
    if before is not None and result.removed:
        try:
            reclaim(db)
        except OperationalError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            result.vacuum_error = reason[0] if reason else type(exc).__name__
        result.freed_bytes = max(0, before - space_used(db))
    return result


def _outside_transactions(db: Database, statements: Callable[[Any], None]) -> None:
    """Run statements on a driver connection in autocommit: VACUUM and a WAL checkpoint
    cannot run inside a transaction, and SQLAlchemy's connections always open one."""
    raw = db.engine.raw_connection()
    try:
        if db.engine.dialect.name == "postgresql":
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
        cur = raw.cursor()
        try:
            statements(cur)
        finally:
            cur.close()
    finally:
        if db.engine.dialect.name == "postgresql":
            raw.driver_connection.autocommit = False  # type: ignore[union-attr]
        raw.close()


def space_used(db: Database) -> int:
    """Bytes the database takes: the SQLite file (after a checkpoint moved the WAL into
    it), or the PostgreSQL relations of memsnap's tables with their indexes."""
    path = sqlite_file(db.url)
    sizes: list[int] = []

    def measure(cur: Any) -> None:
        if db.engine.dialect.name == "sqlite":
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append(os.stat(path).st_size if path is not None else 0)
            return
        for table in metadata.tables:
            cur.execute("SELECT pg_total_relation_size(to_regclass(%s))", (table,))
            sizes.append(int(cur.fetchone()[0] or 0))

    _outside_transactions(db, measure)
    return sum(sizes)


def reclaim(db: Database) -> None:
    """Give the space of deleted rows back."""

    def vacuum(cur: Any) -> None:
        if db.engine.dialect.name == "sqlite":
            cur.execute("VACUUM")
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            quote = db.engine.dialect.identifier_preparer.quote
            cur.execute(f"VACUUM {', '.join(quote(t) for t in metadata.tables)}")

    _outside_transactions(db, vacuum)


def prune_recorded(db: Database, policy: Policy, snapshot_ids: Sequence[int], now: datetime) -> int:
    """A watch's pruning: apply `policy` to the processes of the snapshots just recorded,
    one transaction each, and return how many snapshots went. The space is not given
    back to the file system: the next rounds reuse the freed pages, so the file stays
    as large as the policy's history and no larger."""
    rows: set[int] = set()
    with db.reading() as conn:
        for i in range(0, len(snapshot_ids), _CHUNK):
            chunk = list(snapshot_ids[i : i + _CHUNK])
            rows.update(
                conn.execute(
                    select(snapshots.c.process_id).where(snapshots.c.id.in_(chunk))
                ).scalars()
            )
    removed = 0
    for process_row in sorted(rows):
        gone, _ = db.write(
            partial(
                _prune_one,
                process_row=process_row,
                policy=policy,
                tz=None,
                now=now,
                dry_run=False,
            )
        )
        removed += len(gone)
    return removed
