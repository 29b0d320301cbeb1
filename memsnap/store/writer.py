"""Writing one snapshot: a process, its classified regions, its totals, in one transaction.

A new snapshot k+1 of a process already recorded compares its regions with the rows still
open (`last_seq IS NULL`): an identical row stays open and costs nothing; a row that
vanished or changed gets `last_seq = k`; a new or changed region is inserted with
`first_seq = k+1`. Storage so grows with change, not with the number of snapshots. When
the text a snapshot was read from is byte-for-byte that of the latest snapshot (same
digest), not even the comparison is needed; nor when the quick signal stored after the
digest (maps, smaps_rollup: see `Proc.quick`) is the latest snapshot's. Such an unchanged
snapshot is one row: it names the snapshot whose per-kind totals it shares
(`kinds_from`) instead of copying them. Only the latest snapshot of a process is ever
compared, so writing a new one clears the digest of the one before.

The region rows are the hot path (a process may have 65,530 mappings): they are compared
and written as plain tuples in the database's own representation, straight through the
driver, 200 rows per INSERT, with no per-row ORM or type-processing work. Everything else
uses Core statements, built once (`record --all` runs them for every process).

Two writers recording one process must not both take seq k+1: the transaction is taken
with BEGIN IMMEDIATE on SQLite and the process row is locked FOR UPDATE on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields, replace
from functools import cache
from itertools import chain
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, func, insert, select, update

from memsnap.model import (
    MAPPING_FIELDS,
    REGION_FIELDS,
    Columns,
    ProcessIdentity,
    SnapshotInfo,
    Totals,
    combine,
    totals_by_kind,
)
from memsnap.names import escape_undecodable, raw_bytes
from memsnap.store.database import Database, database_errors
from memsnap.store.rawsql import column_list, placeholder
from memsnap.store.schema import (
    U64_REGION_FIELDS,
    U64_SHIFT,
    paths,
    processes,
    snapshots,
)

_CHUNK = 500
T = TypeVar("T")
# Path ids a connection remembers at most: a busy host maps a few thousand files at once
# (as many as capture remembers ELF layouts of). Past it they are forgotten, and looked up
# again by the next records, one query per 500.
_PATHS_REMEMBERED = 4096
_OPEN_ROWS_BATCH = 2000
# The region columns in the order of `Region`'s fields (path as its id), kind last.
_KEY_COLUMNS = tuple(f.column for f in REGION_FIELDS)
# A region row as an INSERT binds it: its process and first seq, then its key columns.
_ROW_WIDTH = 2 + len(_KEY_COLUMNS)
_SHIFTED = [MAPPING_FIELDS.index(f) for f in U64_REGION_FIELDS]  # positions within a key


def path_digest(text: str) -> str:
    """A path's identity: the hash of its exact bytes, whatever they are."""
    return hashlib.sha256(raw_bytes(text)).hexdigest()


# The statements every snapshot runs, built once: `record --all` runs them for each of a
# machine's processes, and building a Core statement costs more than SQLite running it.
_FIND_PROCESS = select(processes.c.id).where(
    processes.c.host == bindparam("host"),
    processes.c.boot_id == bindparam("boot_id"),
    processes.c.pid == bindparam("pid"),
    processes.c.start_ticks == bindparam("start_ticks"),
)
_FIND_PROCESS_LOCKED = _FIND_PROCESS.with_for_update()
_LATEST_SNAPSHOT = (
    select(snapshots)
    .where(snapshots.c.process_id == bindparam("process_row"))
    .order_by(snapshots.c.seq.desc())
    .limit(1)
)
_PATH_IDS = select(paths.c.digest, paths.c.id).where(
    paths.c.digest.in_(bindparam("digests", expanding=True))
)
_INSERT_SNAPSHOT = insert(snapshots).returning(snapshots.c.id)
_INSERT_PROCESS = insert(processes).returning(processes.c.id)
# Only a process's latest snapshot is compared with a new capture: the one before it
# need not keep its digest (63 bytes of every unchanged snapshot otherwise).
_FORGET_DIGEST = (
    update(snapshots).where(snapshots.c.id == bindparam("snapshot")).values(digest=None)
)


@cache
def _insert_or_skip(dialect: str, table: Any) -> Any:
    # Each dialect's insert is imported only where it is used: SQLite users should not
    # pay for loading the PostgreSQL dialect (README, Performance).
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


@cache
def _insert_new_process(dialect: str) -> Any:
    return _insert_or_skip(dialect, processes).returning(processes.c.id)


def _insert_ignoring_conflicts(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping those a unique constraint says exist (a concurrent writer
    may have just added the same path or process)."""
    if rows:
        conn.execute(_insert_or_skip(conn.dialect.name, table), rows)


def intern_paths(conn: Connection, texts: Iterable[str], remember: bool = True) -> dict[str, int]:
    """The id of each path, inserting those not stored yet.

    Ids found already stored are remembered for the life of the database connection
    (`record --all` meets libc in every process): path rows are never deleted, and only
    rows committed before this transaction began are remembered, never ones it inserted,
    which a rollback could take back. A caller that interns in several rounds within one
    transaction passes `remember=False`: a later round finds the earlier rounds' rows.
    """
    stored: dict[str, int] = conn.info.setdefault("memsnap.path_ids", {}) if remember else {}
    if len(stored) > _PATHS_REMEMBERED:
        # A watch runs for weeks: what it remembers is bounded, never a leak.
        stored.clear()
    by_digest = {path_digest(t): t for t in set(texts)}
    ids = {t: stored[d] for d, t in by_digest.items() if d in stored}

    def look_up(digests: list[str], remember: bool) -> None:
        for i in range(0, len(digests), _CHUNK):
            chunk = digests[i : i + _CHUNK]
            for row in conn.execute(_PATH_IDS, {"digests": chunk}):
                ids[by_digest[row.digest]] = row.id
                if remember:
                    stored[row.digest] = row.id

    look_up([d for d, t in by_digest.items() if t not in ids], remember=True)
    # Inserted in digest order: two writers adding some of the same new paths then take
    # the unique index's locks in the same order, so on PostgreSQL one waits for the
    # other instead of both deadlocking.
    missing = [
        {"digest": d, "text": escape_undecodable(t)}
        for d, t in sorted(by_digest.items())
        if t not in ids
    ]
    if missing:
        _insert_ignoring_conflicts(conn, paths, missing)
        look_up([m["digest"] for m in missing], remember=False)
    return ids


def process_id(
    conn: Connection,
    identity: ProcessIdentity,
    command: str,
    cmdline: Sequence[str],
    exe: str | None,
) -> tuple[int, bool]:
    """The row of this process, created on first sight and locked for this transaction,
    and whether it was created just now.

    An imported text has no boot id or start time: it can never be proven to be the
    same process as another snapshot, so each import gets a process row of its own.
    """
    values = {
        "host": escape_undecodable(identity.host),
        "boot_id": identity.boot_id,
        "pid": identity.pid,
        "start_ticks": identity.start_ticks,
        "exe": None if exe is None else escape_undecodable(exe),
        "command": escape_undecodable(command),
        "cmdline": json.dumps([escape_undecodable(arg) for arg in cmdline]),
    }
    if identity.boot_id is None or identity.start_ticks is None:
        return int(conn.execute(_INSERT_PROCESS, values).scalar_one()), True
    # Inserted unless a row is there already (perhaps just added by another writer).
    created = conn.execute(_insert_new_process(conn.dialect.name), values).scalar_one_or_none()
    if created is not None:
        return int(created), True
    found = find_process(conn, identity)
    assert found is not None
    return found, False


def find_process(conn: Connection, identity: ProcessIdentity) -> int | None:
    """The row of a live process seen before (locked on PostgreSQL), or None."""
    query = _FIND_PROCESS_LOCKED if conn.dialect.name == "postgresql" else _FIND_PROCESS
    row = conn.execute(
        query,
        {
            "host": escape_undecodable(identity.host),
            "boot_id": identity.boot_id,
            "pid": identity.pid,
            "start_ticks": identity.start_ticks,
        },
    ).scalar_one_or_none()
    return None if row is None else int(row)


def recorded_processes(
    conn: Connection, host: str, boot_id: str | None, pids: Iterable[int]
) -> dict[tuple[int, int | None], str | None]:
    """(pid, start time) of every process of this host and boot recorded so far under
    one of `pids`, with its latest snapshot's digest: one query up front saves `record
    --all` a transaction per process it has never seen, and one per process whose
    signals changed."""
    # Only the pids alive now are asked about: a watch asks this every round, and on a
    # host where programs come and go the processes recorded in a boot grow without end
    # (asked about all of them, a round's time and memory grew with them). Each
    # process's latest snapshot is found through the (process, seq) index, not by
    # grouping every snapshot stored.
    newer = snapshots.alias("newer")
    latest_seq = (
        select(func.max(newer.c.seq)).where(newer.c.process_id == processes.c.id).scalar_subquery()
    )
    query = (
        select(processes.c.pid, processes.c.start_ticks, snapshots.c.digest)
        .select_from(processes)
        .join(
            snapshots,
            (snapshots.c.process_id == processes.c.id) & (snapshots.c.seq == latest_seq),
        )
        .where(processes.c.host == escape_undecodable(host), processes.c.boot_id == boot_id)
    )
    wanted = sorted(set(pids))
    found: dict[tuple[int, int | None], str | None] = {}
    for i in range(0, len(wanted), _CHUNK):
        chunk = query.where(processes.c.pid.in_(wanted[i : i + _CHUNK]))
        for pid, ticks, digest in conn.execute(chunk):
            if ticks is not None:
                found[(pid, ticks)] = digest
    return found


def latest_digest(
    conn: Connection, identity: ProcessIdentity
) -> dict[tuple[int, int | None], str | None]:
    """`recorded_processes` for one process: empty when it was never recorded."""
    row = conn.execute(
        _FIND_PROCESS,
        {
            "host": escape_undecodable(identity.host),
            "boot_id": identity.boot_id,
            "pid": identity.pid,
            "start_ticks": identity.start_ticks,
        },
    ).scalar_one_or_none()
    latest = None if row is None else latest_snapshot(conn, int(row))
    if latest is None:
        return {}
    return {(identity.pid, identity.start_ticks): latest.digest}


def digest_parts(stored: str | None) -> tuple[str | None, str | None]:
    """A stored digest's two parts: the full text's hash and, after a '/', the quick
    signal's (`Proc.quick`); either may be missing (snapshots stored before it)."""
    if stored is None:
        return None, None
    full, _, quick = stored.partition("/")
    return full, quick or None


def stored_digest(full: str, quick: str | None) -> str:
    """The column value for a snapshot's full digest and quick signal."""
    return full if quick is None else f"{full}/{quick}"


def latest_snapshot(conn: Connection, process_row: int) -> Any:
    """The latest snapshot row of a process (id, seq, digest and totals), or None."""
    return conn.execute(_LATEST_SNAPSHOT, {"process_row": process_row}).first()


def _snapshot_row(
    conn: Connection,
    process_row: int,
    seq: int,
    info: SnapshotInfo,
    totals: Totals,
    kinds_from: int | None = None,
) -> int:
    return int(
        conn.execute(
            _INSERT_SNAPSHOT,
            {
                "process_id": process_row,
                "seq": seq,
                "taken_at": info.taken_at,
                "label": None if info.label is None else escape_undecodable(info.label),
                "source": info.source,
                "page_size": info.page_size,
                "kernel": info.kernel,
                "has_smaps": info.has_smaps,
                "regions": totals.regions,
                "size": totals.size,
                "rss": totals.rss,
                "pss": totals.pss,
                "swap": totals.swap,
                "uss": totals.uss,
                "digest": info.digest,
                "replaced": info.replaced,
                "kinds_from": kinds_from,
            },
        ).scalar_one()
    )


def _kind_rows(conn: Connection, snapshot_id: int, kinds: dict[str, Totals]) -> None:
    # Through the driver, like the regions: a few rows per snapshot, but `record --all`
    # writes them for every process. `size` is a U64 column, stored shifted.
    if kinds:
        mark = placeholder(conn)
        conn.exec_driver_sql(
            "INSERT INTO snapshot_kinds (snapshot_id, kind, regions, size, rss, pss, swap, uss) "
            f"VALUES ({', '.join([mark] * 8)})",
            [
                (snapshot_id, k, t.regions, t.size - U64_SHIFT, t.rss, t.pss, t.swap, t.uss)
                for k, t in kinds.items()
            ],
        )


def save_unchanged(
    conn: Connection,
    info: SnapshotInfo,
    digest: Callable[[], str] | None,
    quick: str | None = None,
) -> tuple[int, Totals] | None:
    """A new snapshot identical to the process's latest one, if its quick signal or its
    digest says so: no region row is read or written. None when there is no such latest
    snapshot. `digest` (None: the quick signal alone decides) is asked for only when
    there is a latest snapshot to compare with."""
    if info.identity.boot_id is None:
        return None
    # Only looked up, never created here: if the text turns out not to parse, a record
    # that failed must leave nothing behind, not even a process row.
    process_row = find_process(conn, info.identity)
    if process_row is None:
        return None
    latest = latest_snapshot(conn, process_row)
    if latest is None or latest.digest is None:
        return None
    full, latest_quick = digest_parts(latest.digest)
    if quick is not None and quick == latest_quick:
        kept = latest.digest
    elif digest is not None and full == digest():
        assert full is not None
        kept = stored_digest(full, quick)
    else:
        return None
    totals = Totals(latest.regions, latest.size, latest.rss, latest.pss, latest.swap, latest.uss)
    # No per-kind row is written: the new snapshot names the snapshot whose rows the
    # latest has (itself, or the one it names in turn).
    shares = latest.id if latest.kinds_from is None else latest.kinds_from
    snapshot_id = _snapshot_row(
        conn, process_row, latest.seq + 1, replace(info, digest=kept), totals, shares
    )
    conn.execute(_FORGET_DIGEST, {"snapshot": latest.id})
    return snapshot_id, totals


_PATH = MAPPING_FIELDS.index("path")


def _stored_keys(
    columns: Columns, kinds: Sequence[str], path_ids: dict[str, int]
) -> list[tuple[Any, ...]]:
    """Each region as the tuple of its column values, as the database stores them."""
    if not kinds:
        return []
    stored = list(columns)
    for i in _SHIFTED:
        stored[i] = list(map((-U64_SHIFT).__add__, stored[i]))
    stored[_PATH] = [None if p is None else path_ids[p] for p in stored[_PATH]]
    return list(zip(*stored, kinds, strict=True))


def _stored_values(
    columns: Columns, kinds: Sequence[str], path_ids: dict[str, int], process_row: int, seq: int
) -> list[Any]:
    """The rows of one process's new regions (first seen at `seq`) laid end to end, as a
    multi-row INSERT binds them (`_ROW_WIDTH` values a row: the process, the seq, then
    `_stored_keys`' columns): built a column at a time by slice assignment, with no tuple
    per row (60,000 tuples of 22 values, then flattened again, cost more than SQLite's
    own insert of them)."""
    width = _ROW_WIDTH
    values: list[Any] = [None] * (len(kinds) * width)
    if not kinds:
        return values
    values[0::width] = [process_row] * len(kinds)
    values[1::width] = [seq] * len(kinds)
    for i, column in enumerate(columns):
        if i in _SHIFTED:
            column = list(map((-U64_SHIFT).__add__, column))
        elif i == _PATH:
            column = [None if p is None else path_ids[p] for p in column]
        values[2 + i :: width] = column
    values[width - 1 :: width] = kinds
    return values


def _insert_values(conn: Connection, values: list[Any]) -> int:
    """Insert the whole statements' worth of rows at the front of `values` (see
    `_stored_values`, `_insert_regions`); how many values were written."""
    per = _rows_per_insert(conn)
    step = per * _ROW_WIDTH
    whole = len(values) - len(values) % step
    if whole:
        conn.exec_driver_sql(
            _multi_row_insert(conn, per),
            [tuple(values[i : i + step]) for i in range(0, whole, step)],
        )
    return whole


def _insert_new(conn: Connection, values: list[Any]) -> None:
    """Insert the rows of `values` (see `_stored_values`): whole statements, then the
    rest one row per statement."""
    whole = _insert_values(conn, values)
    rest = [tuple(values[i : i + _ROW_WIDTH]) for i in range(whole, len(values), _ROW_WIDTH)]
    if rest:
        conn.exec_driver_sql(_multi_row_insert(conn, 1), rest)


def _keep_unchanged(
    conn: Connection, process_row: int, seq: int, keys: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Compare with the rows still open: close those gone or changed (`last_seq = seq-1`)
    and return the keys that need new rows."""
    mark = placeholder(conn)
    # Identical lines can occur in an imported text; each must still be stored.
    wanted: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(keys):
        wanted.setdefault(key, []).append(i)
    result = conn.exec_driver_sql(
        f"SELECT {column_list(conn, _KEY_COLUMNS)}, id FROM regions "
        f"WHERE process_id = {mark} AND last_seq IS NULL",
        (process_row,),
    )
    vanished = []
    cursor = result.cursor
    assert cursor is not None
    # Streamed from the driver a batch at a time: 60,000 open rows held at once, on top
    # of the new snapshot's, would take memory past 200 MiB.
    while batch := cursor.fetchmany(_OPEN_ROWS_BATCH):
        for row in batch:
            still = wanted.get(tuple(row[:-1]))
            if still:
                still.pop()
            else:
                vanished.append((seq - 1, row[-1]))
    result.close()
    if vanished:
        conn.exec_driver_sql(f"UPDATE regions SET last_seq = {mark} WHERE id = {mark}", vanished)
    return [keys[i] for indexes in wanted.values() for i in indexes]


def _rows_per_insert(conn: Connection) -> int:
    """Region rows per INSERT: one statement per row costs SQLite about a microsecond of
    its own (a third of the time for 60,000 rows); 200 rows stay well inside the bound
    parameter limits (SQLite 32,766 since 3.32, PostgreSQL 65,535)."""
    version = getattr(conn.dialect.dbapi, "sqlite_version_info", None)
    if version is not None and version < (3, 32):
        return 999 // _ROW_WIDTH  # older SQLite allows only 999 parameters
    return 200


def _insert_head(conn: Connection) -> str:
    return f"INSERT INTO regions (process_id, first_seq, {column_list(conn, _KEY_COLUMNS)}) VALUES "


def _multi_row_insert(conn: Connection, rows: int) -> str:
    """An INSERT of `rows` regions, each with its process and seq bound like every other
    value: the same text for every snapshot, which the driver keeps prepared. (Written
    into the text, they made each snapshot of 200 new regions or more a statement of its
    own, about half a MiB each in SQLite's cache of prepared statements: a watch's
    memory grew with them, up to 128 of them a connection.)"""
    marks = ", ".join([placeholder(conn)] * _ROW_WIDTH)
    return _insert_head(conn) + ", ".join([f"({marks})"] * rows)


def _insert_regions(
    conn: Connection, process_row: int, seq: int, rows: list[tuple[Any, ...]]
) -> None:
    """Insert region rows (`_stored_keys`) of one process first seen at `seq`: whole
    statements of `_rows_per_insert` rows, then the rest (all of most processes' rows)
    one row per statement."""
    if not rows:
        return
    per = _rows_per_insert(conn)
    whole = len(rows) - len(rows) % per
    if whole:
        conn.exec_driver_sql(
            _multi_row_insert(conn, per),
            [
                tuple(chain.from_iterable((process_row, seq, *row) for row in rows[i : i + per]))
                for i in range(0, whole, per)
            ],
        )
    if whole < len(rows):
        conn.exec_driver_sql(
            _multi_row_insert(conn, 1), [(process_row, seq, *row) for row in rows[whole:]]
        )


class SeqTaken(ValueError):
    """A snapshot given a seq its process already has (or has passed)."""


def save_pushed_unchanged(
    conn: Connection, info: SnapshotInfo, seq: int, after: int, totals: Totals
) -> int | None:
    """A pushed snapshot at `seq` whose source says its layout is that of its snapshot
    at seq `after`: when this database's latest snapshot of the process is at `after`
    with the same totals, it is stored as an unchanged copy of it (one row, sharing its
    per-kind totals, no region read), and its id returned. None when it is not so (the
    caller copies it whole); `SeqTaken` when the process is already at `seq` or past."""
    process_row = find_process(conn, info.identity)
    if process_row is None:
        return None
    latest = latest_snapshot(conn, process_row)
    if latest is None:
        return None
    if latest.seq >= seq:
        raise SeqTaken(f"seq {seq} is not above the process's latest ({latest.seq})")
    have = Totals(latest.regions, latest.size, latest.rss, latest.pss, latest.swap, latest.uss)
    if latest.seq != after or have != totals:
        return None
    shares = latest.id if latest.kinds_from is None else latest.kinds_from
    snapshot_id = _snapshot_row(conn, process_row, seq, info, totals, shares)
    if latest.digest is not None:
        conn.execute(_FORGET_DIGEST, {"snapshot": latest.id})
    return snapshot_id


def save_snapshot(
    conn: Connection,
    info: SnapshotInfo,
    columns: Columns,
    kinds: Sequence[str],
    seq: int | None = None,
) -> tuple[int, Totals]:
    """Store one snapshot inside the caller's transaction; returns its id and totals.
    `columns` are its mappings field by field (`model.columns_of`), `kinds` their kinds.
    `seq`, when given, is the snapshot's seq (a push keeps the source's, which a prune
    may have left with gaps); it must be above the process's latest."""
    process_row, created = process_id(conn, info.identity, info.command, info.cmdline, info.exe)
    latest = None if created else latest_snapshot(conn, process_row)
    if seq is None:
        seq = 1 if latest is None else latest.seq + 1
    elif latest is not None and seq <= latest.seq:
        raise SeqTaken(f"seq {seq} is not above the process's latest ({latest.seq})")
    path_ids = intern_paths(conn, (p for p in columns[_PATH] if p is not None))
    if latest is None:
        # Everything is new in a process's first snapshot: nothing to compare.
        _insert_new(conn, _stored_values(columns, kinds, path_ids, process_row, seq))
    else:
        keys = _stored_keys(columns, kinds, path_ids)
        _insert_regions(conn, process_row, seq, _keep_unchanged(conn, process_row, seq, keys))
    by_kind = totals_by_kind(columns, kinds)
    totals = combine(by_kind.values())
    snapshot_id = _snapshot_row(conn, process_row, seq, info, totals)
    _kind_rows(conn, snapshot_id, by_kind)
    if latest is not None and latest.digest is not None:
        conn.execute(_FORGET_DIGEST, {"snapshot": latest.id})
    return snapshot_id, totals


def _merge(a: Totals, b: Totals) -> Totals:
    """The totals of two sets of regions together (unknown sizes stay unknown)."""
    merged: dict[str, Any] = {
        f.name: _add_known(getattr(a, f.name), getattr(b, f.name)) for f in fields(Totals)
    }
    return Totals(**merged)


def _add_known(a: int | None, b: int | None) -> int | None:
    return a if b is None else b if a is None else a + b


def save_streamed_snapshot(
    conn: Connection, info: SnapshotInfo, batches: Iterable[tuple[Columns, Sequence[str]]]
) -> tuple[int, Totals]:
    """Store the first snapshot of a new process from its regions a batch at a time
    (columns and kinds, as `save_snapshot` takes them whole), inside the caller's
    transaction: an import of millions of mappings never holds them all. Nothing is
    compared (a new process has no open rows); totals are summed as the rows go in."""
    process_row, created = process_id(conn, info.identity, info.command, info.cmdline, info.exe)
    if not created:
        raise ValueError("a streamed snapshot is the first of a new process")
    seq = 1
    by_kind: dict[str, Totals] = {}
    for columns, kinds in batches:
        path_ids = intern_paths(conn, (p for p in columns[_PATH] if p is not None), remember=False)
        _insert_regions(conn, process_row, seq, _stored_keys(columns, kinds, path_ids))
        for kind, part in totals_by_kind(columns, kinds).items():
            have = by_kind.get(kind)
            by_kind[kind] = part if have is None else _merge(have, part)
    totals = combine(by_kind.values())
    snapshot_id = _snapshot_row(conn, process_row, seq, info, totals)
    _kind_rows(conn, snapshot_id, by_kind)
    return snapshot_id, totals


class NewSnapshot:
    """The first snapshot of a process never recorded before, written as its regions
    come (`add`), before the whole of it is known, inside the caller's transaction:
    nothing of it is visible before the transaction commits, and a failure takes all of
    it back. The process row is created first; `created` False means another writer
    recorded the process meanwhile (nothing is written then: the caller compares with
    that snapshot instead)."""

    def __init__(
        self,
        conn: Connection,
        identity: ProcessIdentity,
        command: str,
        cmdline: Sequence[str],
        exe: str | None,
    ) -> None:
        self.conn = conn
        self.process_row, self.created = process_id(conn, identity, command, cmdline, exe)
        # Rows not written yet, end to end (`_stored_values`): whole INSERTs of
        # `_rows_per_insert` rows go out as they fill, the rest with `finish`.
        self._pending: list[Any] = []

    def add(self, columns: Columns, kinds: Sequence[str]) -> None:
        """Write the next regions (columns and kinds, as `save_snapshot` takes them)."""
        # Interned in rounds within one transaction: nothing this one inserted is
        # remembered on the connection (`intern_paths`).
        path_ids = intern_paths(
            self.conn, (p for p in columns[_PATH] if p is not None), remember=False
        )
        pending = self._pending
        pending.extend(_stored_values(columns, kinds, path_ids, self.process_row, 1))
        del pending[: _insert_values(self.conn, pending)]

    def finish(
        self, info: SnapshotInfo, columns: Columns, kinds: Sequence[str], rewrite: bool = False
    ) -> tuple[int, Totals]:
        """The snapshot row for all the regions (`columns`, `kinds`: every one of them),
        its id and totals. `rewrite`: the kinds differ from those the regions were added
        with; every region row is written again."""
        if rewrite:
            mark = placeholder(self.conn)
            self.conn.exec_driver_sql(
                f"DELETE FROM regions WHERE process_id = {mark}", (self.process_row,)
            )
            self._pending = []
            self.add(columns, kinds)
        _insert_new(self.conn, self._pending)
        self._pending = []
        by_kind = totals_by_kind(columns, kinds)
        totals = combine(by_kind.values())
        snapshot_id = _snapshot_row(self.conn, self.process_row, 1, info, totals)
        _kind_rows(self.conn, snapshot_id, by_kind)
        return snapshot_id, totals


class Writer:
    """The store's writing face, all that capture sees of it: each call is one
    transaction of its own, and any database failure is a `DatabaseError`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def save_snapshot(
        self, info: SnapshotInfo, columns: Columns, kinds: Sequence[str]
    ) -> tuple[int, Totals]:
        """Store one snapshot (see `save_snapshot`); its id and totals."""
        with database_errors():
            return self.db.write(lambda conn: save_snapshot(conn, info, columns, kinds))

    def save_unchanged(
        self, info: SnapshotInfo, digest: Callable[[], str] | None, quick: str | None = None
    ) -> tuple[int, Totals] | None:
        """Store a copy of the process's latest snapshot if nothing changed since (see
        `save_unchanged`); None when something did, and nothing is written."""
        with database_errors():
            return self.db.write(lambda conn: save_unchanged(conn, info, digest, quick))

    def save_streamed_snapshot(
        self, info: SnapshotInfo, batches: Iterable[tuple[Columns, Sequence[str]]]
    ) -> tuple[int, Totals]:
        """Store a new process's first snapshot a batch at a time, in one transaction
        (see `save_streamed_snapshot`)."""
        with database_errors():
            return self.db.write(lambda conn: save_streamed_snapshot(conn, info, batches))

    def save_new_snapshot(
        self,
        identity: ProcessIdentity,
        command: str,
        cmdline: Sequence[str],
        exe: str | None,
        work: Callable[[NewSnapshot], T],
    ) -> T:
        """Run `work` on the first snapshot of a new process, in one transaction (see
        `NewSnapshot`). `work` may be run again from the start (`Database.write`)."""
        with database_errors():
            return self.db.write(
                lambda conn: work(NewSnapshot(conn, identity, command, cmdline, exe))
            )

    def recorded_processes(
        self, host: str, boot_id: str | None, pids: Iterable[int]
    ) -> dict[tuple[int, int | None], str | None]:
        """(pid, start time) of every process of this host and boot recorded so far
        under one of `pids`, with its latest snapshot's digest (see
        `recorded_processes`)."""
        with database_errors(), self.db.reading() as conn:
            return recorded_processes(conn, host, boot_id, pids)
