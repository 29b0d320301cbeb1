"""The plain values that flow between memsnap's modules: mappings, regions, snapshots.

Every value here is immutable: the parser produces `Mapping`s (regions whose kind is
not named yet), the classifier names a kind for each, the store hands back `Region`s
and `Snapshot`s. No module outside `memsnap.store` ever sees a database row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice
from operator import add
from typing import Annotated, Any, NamedTuple, cast, get_type_hints

KINDS: tuple[str, ...] = (
    "text",
    "rodata",
    "data",
    "bss",
    "lib-text",
    "lib-rodata",
    "lib-data",
    "lib-bss",
    "heap",
    "stack",
    "thread-stack",
    "anon",
    "shmem",
    "file",
    "guard",
    "vdso",
    "vvar",
    "vsyscall",
    "other",
    "gap",
)


@dataclass(frozen=True, slots=True)
class Field:
    """How one field of a region is kept, declared beside it on `Region` (`Annotated`).

    `sql` is its column's type: "u64" (an unsigned 64-bit value, stored as a BIGINT
    shifted by 2**63 so that order and differences survive), "bigint", "bool", "text",
    "string" (of `length` characters), or "path" (an id into the interned paths).
    `column` names the column where it is not the field's own name; `smaps` is the
    key of a smaps block the parser reads it from (sizes, in bytes; None when the
    kernel did not print it); `paired` says that pairing the regions of two processes
    compares or keys on it, so a diff of two processes reads it for every region.
    """

    sql: str
    column: str | None = None
    length: int | None = None
    smaps: str | None = None
    paired: bool = False


def _size(key: str, paired: bool = False) -> Field:
    return Field("bigint", smaps=key, paired=paired)


class Region(NamedTuple):
    """One mapping of a process: a line of /proc/PID/maps, the sizes of its smaps block
    when there was one, and its kind.

    The one declaration of a region's fields. The parser's columns, the store's table
    and statements, the reader's select list and U64 shift, pairing and the CSV order all
    follow from `REGION_FIELDS`, built from the lines below. Adding a field means:
    - one line here. A size the kernel prints in smaps goes among the sizes, before
      `vm_flags`, as `_size("Key")`: the parsers build their columns as the header's
      fields, the sizes, then vm_flags (tests/test_parse.py fails otherwise). `kind`
      stays last: a parsed mapping is every field before it.
    - an Alembic migration in migrations/versions adding its column, which drops and
      recreates the views of 0004 since they read the table. The migrated table is
      checked against this declaration on SQLite and PostgreSQL (tests/test_store.py).

    A NamedTuple rather than a frozen dataclass: a process can have 65,530 mappings,
    and a tuple is built much faster, compared and hashed in C (README, Performance).
    """

    start: Annotated[int, Field("u64", "start_addr", paired=True)]
    end: Annotated[int, Field("u64", "end_addr", paired=True)]
    perms: Annotated[str, Field("string", length=4, paired=True)]
    offset: Annotated[int, Field("u64", paired=True)]
    dev: Annotated[str, Field("string", length=32)]
    inode: Annotated[int, Field("u64")]
    path: Annotated[str | None, Field("path", "path_id", paired=True)]
    deleted: Annotated[bool, Field("bool", paired=True)] = False
    rss: Annotated[int | None, _size("Rss", paired=True)] = None
    pss: Annotated[int | None, _size("Pss", paired=True)] = None
    shared_clean: Annotated[int | None, _size("Shared_Clean")] = None
    shared_dirty: Annotated[int | None, _size("Shared_Dirty")] = None
    private_clean: Annotated[int | None, _size("Private_Clean")] = None
    private_dirty: Annotated[int | None, _size("Private_Dirty")] = None
    referenced: Annotated[int | None, _size("Referenced")] = None
    anonymous: Annotated[int | None, _size("Anonymous")] = None
    anon_huge: Annotated[int | None, _size("AnonHugePages")] = None
    swap: Annotated[int | None, _size("Swap", paired=True)] = None
    swap_pss: Annotated[int | None, _size("SwapPss")] = None
    locked: Annotated[int | None, _size("Locked")] = None
    vm_flags: Annotated[str | None, Field("text")] = None
    kind: Annotated[str, Field("string", length=16, paired=True)] = "other"

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def executable(self) -> bool:
        return "x" in self.perms


# What the parser hands out: a region whose kind is not named yet (it holds `Region`'s
# default until the classifier names it). One type, so that a field is declared once.
Mapping = Region
# The fields of a mapping as the parser reads them: all of a region's but its kind.
MAPPING_FIELDS: tuple[str, ...] = Region._fields[:-1]
# The kind a mapping holds until the classifier names one.
UNNAMED_KIND: str = Region._field_defaults["kind"]


@dataclass(frozen=True, slots=True)
class RegionField:
    """One field of `Region` as declared: its name, Python type and `Field`."""

    name: str
    type: Any
    nullable: bool
    spec: Field

    @property
    def column(self) -> str:
        return self.spec.column or self.name


def _declared() -> tuple[RegionField, ...]:
    hints = get_type_hints(Region, include_extras=True)
    out = []
    for name in Region._fields:
        hint = hints[name]
        base, spec = hint.__origin__, hint.__metadata__[0]
        nullable = type(None) in getattr(base, "__args__", ())
        out.append(RegionField(name, base, nullable, spec))
    return tuple(out)


REGION_FIELDS: tuple[RegionField, ...] = _declared()
# The smaps fields memsnap keeps, as (attribute, smaps key). Sizes are bytes; a field the
# kernel did not print (old kernels, --no-smaps, a maps text) is None, never 0.
SMAPS_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (f.name, f.spec.smaps) for f in REGION_FIELDS if f.spec.smaps is not None
)
SIZE_ATTRS: tuple[str, ...] = tuple(attr for attr, _ in SMAPS_FIELDS)
U64_FIELDS: tuple[str, ...] = tuple(f.name for f in REGION_FIELDS if f.spec.sql == "u64")
PAIRING_FIELDS: tuple[str, ...] = tuple(f.name for f in REGION_FIELDS if f.spec.paired)


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over a set of regions; rss/pss/swap/uss are None when smaps was not read.
    `uss` is the unique set size as psutil defines it: private clean + private dirty."""

    regions: int = 0
    size: int = 0
    rss: int | None = None
    pss: int | None = None
    swap: int | None = None
    uss: int | None = None


def _add(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return value if total is None else total + value


def _known_sum(values: Iterable[int | None]) -> int | None:
    picked = list(values)
    if picked and None not in picked:  # one scan in C: with smaps read, none is missing
        return sum(cast(list[int], picked))
    known = [v for v in picked if v is not None]
    return sum(known) if known else None


# A snapshot's mappings field by field: one list per field of `MAPPING_FIELDS`, in that
# order (the kinds travel beside them). 60,000 mappings are summed and stored column-wise
# without building or transposing 60,000 tuples again.
Columns = tuple[list[Any], ...]
_START, _END, _RSS, _PSS, _SWAP, _PRIVATE_CLEAN, _PRIVATE_DIRTY = (
    MAPPING_FIELDS.index(f)
    for f in ("start", "end", "rss", "pss", "swap", "private_clean", "private_dirty")
)


def _private(clean: int | None, dirty: int | None) -> int | None:
    """A region's share of the USS: None only when smaps gave neither field."""
    if clean is None and dirty is None:
        return None
    return (clean or 0) + (dirty or 0)


def columns_of(rows: Sequence[Region]) -> Columns:
    """The columns of a list of mappings or regions: every field but the kind."""
    if not rows:
        return tuple([] for _ in MAPPING_FIELDS)
    # zip hands out one field of every row at a time: the kinds' is never built (and all
    # rows are as long, being regions).
    return tuple(map(list, islice(zip(*rows, strict=False), len(MAPPING_FIELDS))))


# A region from a tuple of all its fields, without a Python-level call per region.
_new_region = cast(Callable[[tuple[object, ...]], Region], partial(tuple.__new__, Region))


def regions_of(columns: Columns, kinds: Sequence[str]) -> list[Region]:
    """The regions of `columns` (one list per field of `MAPPING_FIELDS`) and their kinds,
    built in C: the inverse of `columns_of`."""
    return list(map(_new_region, zip(*columns, kinds, strict=True)))


def totals_by_kind(columns: Columns, kinds: Sequence[str]) -> dict[str, Totals]:
    """Totals per kind, summed column-wise (a process can have 65,530 mappings)."""
    if not kinds:
        return {}
    starts, ends, rss, pss, swap = (columns[i] for i in (_START, _END, _RSS, _PSS, _SWAP))
    clean, dirty = columns[_PRIVATE_CLEAN], columns[_PRIVATE_DIRTY]
    if None in clean or None in dirty:
        private = list(map(_private, clean, dirty))
    else:  # every region has both (smaps read): added in C
        private = list(map(add, clean, dirty))
    groups: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(i)
    out = {}
    for kind, idx in groups.items():
        pick = idx.__iter__
        out[kind] = Totals(
            regions=len(idx),
            size=sum(map(ends.__getitem__, pick())) - sum(map(starts.__getitem__, pick())),
            rss=_known_sum(map(rss.__getitem__, pick())),
            pss=_known_sum(map(pss.__getitem__, pick())),
            swap=_known_sum(map(swap.__getitem__, pick())),
            uss=_known_sum(map(private.__getitem__, pick())),
        )
    return out


def combine(parts: Iterable[Totals]) -> Totals:
    """The totals of a whole snapshot from its per-kind totals."""
    regions = size = 0
    rss = pss = swap = uss = None
    for t in parts:
        regions += t.regions
        size += t.size
        rss, pss, swap = _add(rss, t.rss), _add(pss, t.pss), _add(swap, t.swap)
        uss = _add(uss, t.uss)
    return Totals(regions, size, rss, pss, swap, uss)


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """What makes a process unique over time: pids are reused, this tuple is not."""

    host: str
    boot_id: str | None
    pid: int
    start_ticks: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One recorded snapshot, as the history hands it out."""

    id: int
    process_id: int
    seq: int
    taken_at: datetime
    identity: ProcessIdentity
    command: str
    cmdline: tuple[str, ...]
    exe: str | None
    label: str | None
    page_size: int
    kernel: str | None
    source: str
    has_smaps: bool
    totals: Totals
    kinds: dict[str, Totals] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.identity.pid

    @property
    def host(self) -> str:
        return self.identity.host


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """Everything about a snapshot but its regions: what capture hands the store."""

    identity: ProcessIdentity
    command: str
    cmdline: Sequence[str]
    exe: str | None
    taken_at: datetime
    label: str | None
    source: str
    page_size: int
    kernel: str | None
    has_smaps: bool
    digest: str | None = None
    # JSON list of the replaced executable objects (see store.schema), None when not known.
    replaced: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotFilter:
    """Which snapshots a list asks for; `name` is a pattern as `memsnap.match` reads it."""

    pid: int | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    host: str | None = None
