"""What `memsnap check` reads besides layouts: a process's snapshots with the replaced
objects recorded with each, and region rows with the snapshots they lived in, as the
plain values of `memsnap.checking`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from memsnap.checking import Row, Step, decode
from memsnap.findings import has_no_file
from memsnap.model import Region
from memsnap.store.rawsql import placeholder
from memsnap.store.schema import U64_SHIFT, snapshots

_ID_CHUNK = 500  # values per IN (...): well inside every database's parameter limit


def steps(conn: Connection, process_id: int) -> list[Step]:
    """Every snapshot of a process, oldest first."""
    rows = conn.execute(
        select(snapshots.c.id, snapshots.c.seq, snapshots.c.taken_at, snapshots.c.replaced)
        .where(snapshots.c.process_id == process_id)
        .order_by(snapshots.c.seq)
    )
    return [Step(r.id, r.seq, r.taken_at, decode(r.replaced)) for r in rows]


# A Region's fields in order, then the row's first and last snapshot.
_ROW_FIELDS = (
    "r.start_addr, r.end_addr, r.perms, r.offset, r.dev, r.inode, p.text, r.deleted, "
    "r.rss, r.pss, r.shared_clean, r.shared_dirty, r.private_clean, r.private_dirty, "
    "r.referenced, r.anonymous, r.anon_huge, r.swap, r.swap_pss, r.locked, r.vm_flags, "
    "r.kind, r.first_seq, r.last_seq"
)
_U64_AT = (0, 1, 3, 5)  # start, end, offset, inode: stored shifted by 2**63


def _rows(conn: Connection, process_id: int, where: str, params: Sequence[Any]) -> list[Row]:
    """Region rows of one process (`where` over `regions r` and `paths p`, `?` marks)."""
    mark = placeholder(conn)
    quoted = _ROW_FIELDS.replace(
        "r.offset", f"r.{conn.dialect.identifier_preparer.quote('offset')}"
    )
    result = conn.exec_driver_sql(
        f"SELECT {quoted} FROM regions r LEFT JOIN paths p ON p.id = r.path_id "
        f"WHERE r.process_id = {mark} AND ({where.replace('?', mark)})",
        (process_id, *params),
    )
    out = []
    for row in result:
        values = list(row)
        for i in _U64_AT:
            values[i] = int(values[i]) + U64_SHIFT
        values[7] = bool(values[7])
        first, last = values[-2], values[-1]
        out.append(Row(Region(*values[:-2]), int(first), None if last is None else int(last)))
    return out


def rows_at(conn: Connection, process_id: int, starts: set[int]) -> list[Row]:
    """Every row of the process at these addresses, whatever snapshot it lived in."""
    out: list[Row] = []
    ordered = sorted(starts)
    for i in range(0, len(ordered), _ID_CHUNK):
        chunk = ordered[i : i + _ID_CHUNK]
        out += _rows(
            conn,
            process_id,
            f"r.start_addr IN ({', '.join('?' * len(chunk))})",
            [s - U64_SHIFT for s in chunk],
        )
    return out


def fileless_rows(conn: Connection, process_id: int) -> list[Row]:
    """The rows `w-then-x` looks at: no file behind them, writable or executable."""
    return [
        row
        # The pattern is bound: written into the text, its `%` is a placeholder to the
        # PostgreSQL driver, and `check` failed there.
        for row in _rows(conn, process_id, "r.path_id IS NULL OR p.text LIKE ?", ("[%",))
        if has_no_file(row.region) and ("w" in row.region.perms or "x" in row.region.perms)
    ]
