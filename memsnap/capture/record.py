"""Taking a snapshot: read (procfs) or import a text, parse, classify, store.

This is the one place the pure steps meet I/O. ELF headers for bss are read through the
kernel's handle on each mapped object (`/proc/PID/map_files/...`, which works even for a
deleted library), else from the path when it still names the same inode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memsnap.capture.procfs import Capture, Proc, ProcessInfo
from memsnap.classify import Threads, classify
from memsnap.elf import HEAD_BYTES, LoadLayout, parse_load_layout
from memsnap.errors import MemsnapError
from memsnap.model import Mapping, ProcessIdentity, Totals, columns_of
from memsnap.parse import parse_text
from memsnap.store.database import Database
from memsnap.store.writer import SnapshotInfo, save_snapshot, save_unchanged


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `record` prints about each snapshot it stored."""

    snapshot_id: int
    pid: int
    command: str
    totals: Totals


# ELF headers by (path, device, inode), found through a live process: an object is read
# once per run, however many processes map it (an inode names one file's content for as
# long as it exists). Objects that could not be read are not remembered: another
# process may be readable where this one was not.
_LAYOUT_CACHE: dict[tuple[str, str, int], LoadLayout] = {}


def layouts_from_files(
    proc: Proc | None, pid: int | None
) -> Callable[[Mapping], LoadLayout | None]:
    """A layout source for the classifier: the object's ELF headers, where readable."""
    cache = _LAYOUT_CACHE

    def layout(m: Mapping) -> LoadLayout | None:
        assert m.path is not None
        key = (m.path, m.dev, m.inode)
        if key in cache:
            return cache[key]
        found = None
        if proc is not None and pid is not None:
            found = read_load_layout(proc.map_file(pid, m.start, m.end))
        if found is None and not m.deleted and _same_inode(m.path, m.inode):
            found = read_load_layout(m.path)
        if found is not None:
            cache[key] = found
        return found

    return layout


def read_load_layout(path: str | Path) -> LoadLayout | None:
    """Read an ELF file's load segments; None when it cannot be read or is not ELF.

    The program headers sit right after the ELF header in every toolchain's output, so
    the first 16 KiB hold them; an object that puts them further away is treated as
    unreadable (its bss then falls back to adjacency in the classifier).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return None
    return parse_load_layout(head)


def _same_inode(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except (OSError, ValueError):
        return False


def _info(capture: Capture, label: str | None, taken_at: datetime) -> SnapshotInfo:
    info = capture.info
    return SnapshotInfo(
        identity=info.identity,
        command=info.command,
        cmdline=info.cmdline,
        exe=info.exe,
        taken_at=taken_at,
        label=label,
        source="live",
        page_size=info.page_size,
        kernel=info.kernel,
        has_smaps=capture.has_smaps,
    )


def record_capture(
    db: Database,
    proc: Proc,
    capture: Capture,
    label: str | None,
    taken_at: datetime,
    recorded: Container[tuple[int, int | None]] | None = None,
) -> Recorded:
    """Store a capture: a copy of the latest snapshot when nothing changed since, else
    parsed, classified and compared region by region. `recorded`, when given, holds
    (pid, start time) of the processes recorded before: others are not looked for."""
    info = capture.info
    snapshot = _info(capture, label, taken_at)
    identity = info.identity
    if recorded is None or (identity.pid, identity.start_ticks) in recorded:
        same = db.write(lambda conn: save_unchanged(conn, snapshot, capture.digest.value))
        if same is not None:
            return Recorded(same[0], identity.pid, info.command, same[1])
    parsed = parse_text(capture.raw)
    # A running thread has no readable stack pointer; then the guard-page rule helps.
    threads = Threads(capture.threads.known, some_unknown=capture.threads.unknown > 0)
    kinds = classify(
        parsed.mappings,
        info.exe,
        threads,
        layouts_from_files(proc, info.identity.pid),
        info.page_size,
    )
    stored = replace(snapshot, digest=capture.digest.value())
    snapshot_id, totals = db.write(lambda conn: save_snapshot(conn, stored, parsed.columns, kinds))
    return Recorded(snapshot_id, info.identity.pid, info.command, totals)


def record_pid(
    db: Database,
    proc: Proc,
    pid: int,
    *,
    smaps: bool = True,
    label: str | None = None,
    recorded: Container[tuple[int, int | None]] | None = None,
    info: ProcessInfo | None = None,
) -> Recorded:
    """Read and store one snapshot of a live process (`recorded`: see `record_capture`;
    `info`: see `Proc.capture`)."""
    taken_at = datetime.now(timezone.utc)
    capture = proc.capture(pid, smaps=smaps, info=info)
    return record_capture(db, proc, capture, label, taken_at, recorded)


IMPORTED_HOST = "(imported)"
# A mapping's fields that come from smaps, left out of an import with --no-smaps.
_NO_SMAPS: dict[str, Any] = dict.fromkeys(Mapping._fields[Mapping._fields.index("deleted") + 1 :])


def record_text(
    db: Database,
    text: str | bytes,
    *,
    pid: int,
    label: str | None = None,
    host: str = IMPORTED_HOST,
    command: str | None = None,
    page_size: int = 4096,
    taken_at: datetime | None = None,
    smaps: bool = True,
) -> Recorded:
    """Store a saved maps or smaps text as a snapshot of `pid` (`smaps=False`: its
    smaps sizes are left out, as `--no-smaps` leaves them out of a live record)."""
    parsed = parse_text(text, saved=True)
    if not parsed.mappings:
        raise MemsnapError("the text holds no mappings")
    mappings = sorted(parsed.mappings, key=lambda m: m.start)
    if not smaps:
        mappings = [m._replace(**_NO_SMAPS) for m in mappings]
    kinds = classify(
        mappings, None, Threads((), some_unknown=True), layouts_from_files(None, None), page_size
    )
    program = next(
        (m.path for m, k in zip(mappings, kinds, strict=True) if k == "text" and m.path), None
    )
    name = command or (Path(program).name if program else "?")
    info = SnapshotInfo(
        identity=ProcessIdentity(host, None, pid, None),
        command=name,
        cmdline=(),
        exe=program,
        taken_at=taken_at or datetime.now(timezone.utc),
        label=label,
        source="file",
        page_size=page_size,
        kernel=None,
        has_smaps=parsed.has_smaps and smaps,
    )
    columns = columns_of(mappings)
    snapshot_id, totals = db.write(lambda conn: save_snapshot(conn, info, columns, kinds))
    return Recorded(snapshot_id, pid, name, totals)
