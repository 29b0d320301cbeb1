"""Typed SQLAlchemy 2 ORM models of memsnap's tables, for code that wants objects.

memsnap itself works with the Core tables in `memsnap.store.schema` (bulk reads and
writes, and no `sqlalchemy.orm` import on the start-up path). These models map the very
same tables ("declarative with imperative table"), so scripts, notebooks and tests can
query a memsnap database with a typed `Session`:

    with Session(open_database().engine) as session:
        for row in session.scalars(select(SnapshotRow).order_by(SnapshotRow.taken_at)):
            print(row.id, row.taken_at, row.regions)

Addresses come back as Python ints (the U64 column type undoes the storage shift).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import DeclarativeBase, Mapped

from memsnap.store import schema


class Base(DeclarativeBase):
    metadata = schema.metadata


class ProcessRow(Base):
    """A process as the kernel knows it: pids are reused, (host, boot, pid, start) not."""

    __table__ = schema.processes

    id: Mapped[int]
    host: Mapped[str]
    boot_id: Mapped[str | None]
    pid: Mapped[int]
    start_ticks: Mapped[int | None]
    exe: Mapped[str | None]
    command: Mapped[str]
    cmdline: Mapped[str]


class SnapshotRow(Base):
    __table__ = schema.snapshots

    id: Mapped[int]
    process_id: Mapped[int]
    seq: Mapped[int]
    taken_at: Mapped[datetime]
    label: Mapped[str | None]
    source: Mapped[str]
    page_size: Mapped[int]
    kernel: Mapped[str | None]
    has_smaps: Mapped[bool]
    regions: Mapped[int]
    size: Mapped[int]
    rss: Mapped[int | None]
    pss: Mapped[int | None]
    swap: Mapped[int | None]
    uss: Mapped[int | None]
    digest: Mapped[str | None]
    replaced: Mapped[str | None]


class SnapshotKindRow(Base):
    __table__ = schema.snapshot_kinds

    snapshot_id: Mapped[int]
    kind: Mapped[str]
    regions: Mapped[int]
    size: Mapped[int]
    rss: Mapped[int | None]
    pss: Mapped[int | None]
    swap: Mapped[int | None]
    uss: Mapped[int | None]


class PathRow(Base):
    __table__ = schema.paths

    id: Mapped[int]
    digest: Mapped[str]
    text: Mapped[str]


class RegionRow(Base):
    """One region version: alive from snapshot `first_seq` to `last_seq` (NULL: still)."""

    __table__ = schema.regions

    id: Mapped[int]
    process_id: Mapped[int]
    first_seq: Mapped[int]
    last_seq: Mapped[int | None]
    start_addr: Mapped[int]
    end_addr: Mapped[int]
    perms: Mapped[str]
    offset: Mapped[int]
    dev: Mapped[str]
    inode: Mapped[int]
    path_id: Mapped[int | None]
    deleted: Mapped[bool]
    kind: Mapped[str]
    rss: Mapped[int | None]
    pss: Mapped[int | None]
    shared_clean: Mapped[int | None]
    shared_dirty: Mapped[int | None]
    private_clean: Mapped[int | None]
    private_dirty: Mapped[int | None]
    referenced: Mapped[int | None]
    anonymous: Mapped[int | None]
    anon_huge: Mapped[int | None]
    swap: Mapped[int | None]
    swap_pss: Mapped[int | None]
    locked: Mapped[int | None]
    vm_flags: Mapped[str | None]
