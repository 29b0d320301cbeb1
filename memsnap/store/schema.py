"""The database schema as SQLAlchemy 2 typed models; Alembic migrations mirror it.

Storage grows with change, not with time: a region row lives from the snapshot it first
appeared in (`first_seq`) to the last one it was seen in (`last_seq`, NULL while it is
still there at the process's latest snapshot). Recording an unchanged process again adds
one snapshot row and nothing else. The layout at snapshot k of a process is the rows
with `first_seq <= k` and `last_seq` NULL or `>= k`.

Addresses, offsets and inodes are unsigned 64-bit (`[vsyscall]` sits at
0xffffffffff600000), beyond SQLite INTEGER and PostgreSQL BIGINT. `U64` stores
`value - 2**63` in a BIGINT: both databases then keep order and differences exactly.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

U64_SHIFT = 2**63

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ProcessRow(Base):
    """A process as the kernel knows it: pids are reused, (host, boot, pid, start) not."""

    __tablename__ = "processes"
    __table_args__ = (UniqueConstraint("host", "boot_id", "pid", "start_ticks"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer, index=True)
    start_ticks: Mapped[int | None] = mapped_column(BigInteger)
    exe: Mapped[str | None] = mapped_column(Text)
    command: Mapped[str] = mapped_column(Text)
    cmdline: Mapped[str] = mapped_column(Text)  # JSON list of arguments


class SnapshotRow(Base):
    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("process_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    process_id: Mapped[int] = mapped_column(ForeignKey("processes.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    label: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    page_size: Mapped[int] = mapped_column(Integer)
    kernel: Mapped[str | None] = mapped_column(String(255))
    has_smaps: Mapped[bool] = mapped_column(Boolean)
    regions: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(U64())
    rss: Mapped[int | None] = mapped_column(BigInteger)
    pss: Mapped[int | None] = mapped_column(BigInteger)
    swap: Mapped[int | None] = mapped_column(BigInteger)
    # Hash of the text a live snapshot was read from; equal digests, equal layouts.
    digest: Mapped[str | None] = mapped_column(String(64))


class SnapshotKindRow(Base):
    """Per-kind totals of one snapshot, so diffs and replays need not sum regions."""

    __tablename__ = "snapshot_kinds"

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    regions: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(U64())
    rss: Mapped[int | None] = mapped_column(BigInteger)
    pss: Mapped[int | None] = mapped_column(BigInteger)
    swap: Mapped[int | None] = mapped_column(BigInteger)


class PathRow(Base):
    """Every distinct path once. Looked up by digest: a path can be longer than a
    PostgreSQL btree index entry may be."""

    __tablename__ = "paths"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)


class RegionRow(Base):
    __tablename__ = "regions"
    __table_args__ = (
        Index("ix_regions_process_first", "process_id", "first_seq"),
        Index("ix_regions_process_last", "process_id", "last_seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    process_id: Mapped[int] = mapped_column(ForeignKey("processes.id", ondelete="CASCADE"))
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int | None] = mapped_column(Integer)
    start_addr: Mapped[int] = mapped_column(U64())
    end_addr: Mapped[int] = mapped_column(U64())
    perms: Mapped[str] = mapped_column(String(4))
    offset: Mapped[int] = mapped_column(U64())
    dev: Mapped[str] = mapped_column(String(32))
    inode: Mapped[int] = mapped_column(U64())
    path_id: Mapped[int | None] = mapped_column(ForeignKey("paths.id"))
    deleted: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str] = mapped_column(String(16))
    rss: Mapped[int | None] = mapped_column(BigInteger)
    pss: Mapped[int | None] = mapped_column(BigInteger)
    shared_clean: Mapped[int | None] = mapped_column(BigInteger)
    shared_dirty: Mapped[int | None] = mapped_column(BigInteger)
    private_clean: Mapped[int | None] = mapped_column(BigInteger)
    private_dirty: Mapped[int | None] = mapped_column(BigInteger)
    referenced: Mapped[int | None] = mapped_column(BigInteger)
    anonymous: Mapped[int | None] = mapped_column(BigInteger)
    anon_huge: Mapped[int | None] = mapped_column(BigInteger)
    swap: Mapped[int | None] = mapped_column(BigInteger)
    swap_pss: Mapped[int | None] = mapped_column(BigInteger)
    locked: Mapped[int | None] = mapped_column(BigInteger)
    vm_flags: Mapped[str | None] = mapped_column(Text)


# The tables, for Core statements (bulk inserts and updates skip the ORM's per-object cost).
processes = cast(Table, ProcessRow.__table__)
snapshots = cast(Table, SnapshotRow.__table__)
snapshot_kinds = cast(Table, SnapshotKindRow.__table__)
paths = cast(Table, PathRow.__table__)
regions = cast(Table, RegionRow.__table__)
