"""The database schema as SQLAlchemy Core tables; Alembic migrations mirror it.

Core, not the ORM: memsnap reads and writes in bulk and never needs identity-mapped
objects, and keeping `sqlalchemy.orm` off the start-up path saves a measurable share
of every command (README, Performance). This is the one description of the schema:
the `regions` table's region columns are built from `memsnap.model.Region`'s
declaration, and the migrations (which are history, and stay as written) are checked
against these tables by the tests.

Storage grows with change, not with time: a region row lives from the snapshot it first
appeared in (`first_seq`) to the last one it was seen in (`last_seq`, NULL while it is
still there at the process's latest snapshot). Recording an unchanged process again adds
one snapshot row and nothing else: no region row, no per-kind row (it names the snapshot
whose per-kind totals it shares, `kinds_from`). The layout at snapshot k of a process is the rows
with `first_seq <= k` and `last_seq` NULL or `>= k`.

Addresses, offsets and inodes are unsigned 64-bit (`[vsyscall]` sits at
0xffffffffff600000), beyond SQLite INTEGER and PostgreSQL BIGINT. `U64` stores
`value - 2**63` in a BIGINT: both databases then keep order and differences exactly.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from memsnap.model import REGION_FIELDS, U64_FIELDS, RegionField

U64_SHIFT = 2**63
# The region fields kept in U64 columns (start_addr, end_addr, offset, inode): code that
# reads or writes region rows through the driver shifts these itself.
U64_REGION_FIELDS = U64_FIELDS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class U64(TypeDecorator[int]):
    """An unsigned 64-bit integer stored as a signed BIGINT shifted by 2**63."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        return None if value is None else value - U64_SHIFT

    def process_result_value(self, value: Any | None, dialect: Dialect) -> int | None:
        return None if value is None else int(value) + U64_SHIFT


class UTCDateTime(TypeDecorator[datetime]):
    """A moment stored in UTC and always handed back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: memsnap stores only aware times")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=timezone.utc)


metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _region_column(f: RegionField) -> Column[Any]:
    """A region field's column, as `memsnap.model.Region` declares it."""
    sql = f.spec.sql
    if sql == "path":
        return Column(f.column, ForeignKey("paths.id"), nullable=f.nullable)
    kind: Any = {"u64": U64(), "bigint": BigInteger, "bool": Boolean, "text": Text}.get(sql)
    if sql == "string":
        kind = String(f.spec.length)
    assert kind is not None, f"{f.name}: no column type {sql!r}"
    return Column(f.column, kind, nullable=f.nullable)


# A process as the kernel knows it: pids are reused, (host, boot, pid, start) are not.
processes = Table(
    "processes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("boot_id", String(64), nullable=True),
    Column("pid", Integer, nullable=False, index=True),
    Column("start_ticks", BigInteger, nullable=True),
    Column("exe", Text, nullable=True),
    Column("command", Text, nullable=False),
    Column("cmdline", Text, nullable=False),  # JSON list of arguments
    UniqueConstraint("host", "boot_id", "pid", "start_ticks"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("process_id", ForeignKey("processes.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False, index=True),
    Column("label", Text, nullable=True),
    Column("source", String(16), nullable=False),
    Column("page_size", Integer, nullable=False),
    Column("kernel", String(255), nullable=True),
    Column("has_smaps", Boolean, nullable=False),
    Column("regions", Integer, nullable=False),
    Column("size", U64(), nullable=False),
    Column("rss", BigInteger, nullable=True),
    Column("pss", BigInteger, nullable=True),
    Column("swap", BigInteger, nullable=True),
    # Unique set size (private clean + private dirty), psutil's USS.
    Column("uss", BigInteger, nullable=True),
    # Hash of the text a live snapshot was read from; equal digests, equal layouts. Only
    # a process's latest snapshot is ever compared, so only it keeps its digest: writing
    # the next one clears the one before.
    Column("digest", String(64), nullable=True),
    # The executable files whose path named another file when this snapshot was taken
    # (`memsnap.capture_replaced`): a JSON list of [path, device, inode]; NULL where not
    # known (imports, snapshots older than the column).
    Column("replaced", Text, nullable=True),
    # The earlier snapshot of this process whose per-kind totals this one has (its rows
    # in `snapshot_kinds`), NULL when it has rows of its own: an unchanged snapshot
    # writes none (migration 0006_compact). No foreign key: a prune that removes the
    # snapshot named here first moves its rows to a kept one (`memsnap.store.prune`).
    Column("kinds_from", Integer, nullable=True),
    UniqueConstraint("process_id", "seq"),
)

# Per-kind totals of a snapshot, so diffs and replays need not sum regions; stored only
# when they are not those of the snapshot before (see `snapshots.kinds_from`).
snapshot_kinds = Table(
    "snapshot_kinds",
    metadata,
    Column("snapshot_id", ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("regions", Integer, nullable=False),
    Column("size", U64(), nullable=False),
    Column("rss", BigInteger, nullable=True),
    Column("pss", BigInteger, nullable=True),
    Column("swap", BigInteger, nullable=True),
    Column("uss", BigInteger, nullable=True),
)

# Every distinct path once, looked up by digest: a path can be longer than a PostgreSQL
# btree index entry may be.
paths = Table(
    "paths",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("text", Text, nullable=False),
)

regions = Table(
    "regions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("process_id", ForeignKey("processes.id", ondelete="CASCADE"), nullable=False),
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=True),
    # Every field of a region (model.Region's declaration), in its order.
    *map(_region_column, REGION_FIELDS),
    Index("ix_regions_process_first", "process_id", "first_seq"),
    Index("ix_regions_process_last", "process_id", "last_seq"),
)
