"""Taking a snapshot: read (procfs) or import a text, parse, classify, store.

This is the one place the pure steps meet I/O. ELF headers for bss are read through the
kernel's handle on each mapped object (`/proc/PID/map_files/...`, which works even for a
deleted library), else from the path when it still names the same inode.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator
from collections.abc import Mapping as Mapping_
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from memsnap.capture.procfs import Capture, Proc, ProcessInfo, ThreadPointers
from memsnap.capture.replaced import executable_files, replaced_among, replaced_in
from memsnap.classify import MAX_STREAMED_OBJECTS, StreamClassifier, Threads, classify
from memsnap.elf import HEAD_BYTES, LoadLayout, parse_load_layout
from memsnap.errors import MemsnapError, ParseError
from memsnap.model import (
    MAPPING_FIELDS,
    Columns,
    Mapping,
    ProcessIdentity,
    SnapshotInfo,
    Totals,
    columns_of,
)
from memsnap.parse import Parsed, Sums, parse_piece, parse_text, read_pieces
from memsnap.store.database import Database
from memsnap.store.writer import (
    NewSnapshot,
    Writer,
    digest_parts,
    latest_digest,
    stored_digest,
)

if TYPE_CHECKING:
    from memsnap.capture import pipeline
    from memsnap.capture.ahead import ReadAhead


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
# process may be readable where this one was not. A watch of the whole machine may run
# for days while programs come and go, so the least recently used are forgotten past
# LAYOUT_CACHE_SIZE objects (a busy host maps a few thousand at once).
LAYOUT_CACHE_SIZE = 4096
_LAYOUT_CACHE: OrderedDict[tuple[str, str, int], LoadLayout] = OrderedDict()


def layouts_from_files(
    proc: Proc | None, pid: int | None
) -> Callable[[Mapping], LoadLayout | None]:
    """A layout source for the classifier: the object's ELF headers, where readable."""
    cache = _LAYOUT_CACHE

    def layout(m: Mapping) -> LoadLayout | None:
        assert m.path is not None
        key = (m.path, m.dev, m.inode)
        found = cache.get(key)
        if found is not None:
            cache.move_to_end(key)
            return found
        if proc is not None and pid is not None:
            found = read_load_layout(proc.map_file(pid, m.start, m.end))
        if found is None and not m.deleted and _same_inode(m.path, m.inode):
            found = read_load_layout(m.path)
        if found is not None:
            cache[key] = found
            if len(cache) > LAYOUT_CACHE_SIZE:
                cache.popitem(last=False)
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
    return _info_of(capture.info, capture.has_smaps, label, taken_at)


def _info_of(
    info: ProcessInfo, has_smaps: bool, label: str | None, taken_at: datetime
) -> SnapshotInfo:
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
        has_smaps=has_smaps,
    )


def classify_capture(proc: Proc, capture: Capture) -> tuple[Parsed, list[str]]:
    """A live capture parsed (with the kernel's ` (deleted)` told from a name's own)
    and the kind of each mapping."""
    parsed = parse_text(capture.raw)
    return parsed, classify_parsed(proc, capture, parsed)


def classify_parsed(proc: Proc, capture: Capture, parsed: Parsed) -> list[str]:
    """The kind of each mapping of a capture's parsed text; the kernel's ` (deleted)` is
    told from a name's own first (`settle_deleted`, which changes `parsed`)."""
    info = capture.info
    settle_deleted(proc, info.identity.pid, parsed)
    # A running thread has no readable stack pointer; then the guard-page rule helps.
    threads = Threads(capture.threads.known, some_unknown=capture.threads.unknown > 0)
    return classify(
        parsed.mappings,
        info.exe,
        threads,
        layouts_from_files(proc, info.identity.pid),
        info.page_size,
    )


_PATH, _DELETED = MAPPING_FIELDS.index("path"), MAPPING_FIELDS.index("deleted")


def settle_deleted(proc: Proc, pid: int, parsed: Parsed) -> None:
    """A file literally named `a b (deleted)` reads in maps like a deleted `a b`: for a
    live process the kernel settles which it is (`Proc.deleted_for_real`), and a name's
    own suffix is put back. Only mappings flagged deleted are looked at."""
    flags = parsed.columns[_DELETED]
    for i in [i for i, flag in enumerate(flags) if flag]:
        m = parsed.mappings[i]
        assert m.path is not None
        if not proc.deleted_for_real(pid, m.start, m.end, m.path, m.inode):
            named = m._replace(path=m.path + " (deleted)", deleted=False)
            parsed.mappings[i] = named
            parsed.columns[_PATH][i] = named.path
            flags[i] = False


# (pid, start time) of the processes recorded before; as a mapping, with the digest of
# each one's latest snapshot (`recorded_processes`).
Recorded_ = Container[tuple[int, int | None]] | Mapping_[tuple[int, int | None], str | None]


def record_capture(
    db: Database,
    proc: Proc,
    capture: Capture,
    label: str | None,
    taken_at: datetime,
    recorded: Recorded_ | None = None,
    quick: str | None = None,
) -> Recorded:
    """Store a capture: a copy of the latest snapshot when nothing changed since, else
    parsed, classified and compared region by region. `recorded`, when given, holds
    (pid, start time) of the processes recorded before: others are not looked for.
    `quick`: the capture's quick signal (`Proc.quick`), stored with its digest."""
    info = capture.info
    root = proc.file(info.identity.pid, "root")
    snapshot = _info(capture, label, taken_at)
    identity = info.identity
    key = (identity.pid, identity.start_ticks)
    if recorded is None or key in recorded:
        known = recorded.get(key) if isinstance(recorded, Mapping_) else None
        full = digest_parts(known)[0]
        # With the latest digest known, a differing one needs no transaction to say so.
        if full is None or full == capture.digest.value():
            # Once a library is replaced the text stops changing and later snapshots are
            # copies: each copy must carry the fact, taken now.
            copy = replace(snapshot, replaced=replaced_in(capture.raw, root))
            same = Writer(db).save_unchanged(copy, capture.digest.value, quick)
            if same is not None:
                return Recorded(same[0], identity.pid, info.command, same[1])
    parsed = parse_text(capture.raw)
    replaced = replaced_among(executable_files(parsed.mappings), root)
    kinds = classify_parsed(proc, capture, parsed)
    digest = stored_digest(capture.digest.value(), quick)
    stored = replace(snapshot, replaced=replaced, digest=digest)
    snapshot_id, totals = Writer(db).save_snapshot(stored, parsed.columns, kinds)
    return Recorded(snapshot_id, info.identity.pid, info.command, totals)


def pipeline_asked() -> bool:
    """Whether a big first record overlaps its stages (`memsnap.capture.pipeline`): only
    with MEMSNAP_PIPELINE=1. Measured, it does not pay once smaps is parsed in C (README,
    Performance); it is imported only then."""
    return os.environ.get("MEMSNAP_PIPELINE") == "1"


def quick_enabled() -> bool:
    """Whether an unchanged process may be told from its quick signal (`Proc.quick`)
    before its smaps is read: MEMSNAP_QUICK=0 turns it off (every record reads smaps)."""
    return os.environ.get("MEMSNAP_QUICK", "1") != "0"


def record_pid(
    db: Database,
    proc: Proc,
    pid: int,
    *,
    smaps: bool = True,
    label: str | None = None,
    recorded: Recorded_ | None = None,
    info: ProcessInfo | None = None,
    taken_at: datetime | None = None,
    ahead: ReadAhead | None = None,
) -> Recorded:
    """Read and store one snapshot of a live process (`recorded`: see `record_capture`;
    `info`: see `Proc.capture`; `taken_at`: the time to store, default now).

    A process recorded before is first read cheaply (`Proc.quick`): when that signal is
    the one stored with its latest snapshot, the snapshot is a copy of the latest and
    smaps is never read. `ahead`: the process already read on a second thread, used
    when `info` is the one it read (`memsnap.capture.ahead`)."""
    if ahead is not None and (info is None or ahead.info is not info or ahead.smaps != smaps):
        ahead = None
    if taken_at is None:
        taken_at = ahead.taken_at if ahead is not None else None
    if taken_at is None:
        taken_at = datetime.now(timezone.utc)
    quick: str | None = None
    if quick_enabled() and proc.boot_id is not None:
        if info is None or info.stat is None:
            info = proc.info(pid)
        identity = info.identity
        key = (identity.pid, identity.start_ticks)
        if recorded is None and identity.boot_id is not None:
            # Asked first: a process never recorded is not read twice for nothing.
            with db.reading() as conn:
                recorded = latest_digest(conn, identity)
        if recorded is None or key in recorded:
            signal = ahead.quick if ahead is not None else None
            if signal is None:
                signal = proc.quick(pid, smaps=smaps, info=info)
            quick = signal.value
            known = recorded.get(key) if isinstance(recorded, Mapping_) else None
            if known is None or digest_parts(known)[1] == quick:
                # A copy carries the replaced objects as a full read would (see
                # `record_capture`): maps holds the same header lines as smaps.
                replaced = replaced_in(signal.maps, proc.file(pid, "root"))
                snapshot = replace(_info_of(signal.info, smaps, label, taken_at), replaced=replaced)
                same = Writer(db).save_unchanged(snapshot, None, quick)
                if same is not None:
                    return Recorded(same[0], identity.pid, info.command, same[1])
    capture = ahead.capture if ahead is not None else None
    if capture is not None:
        assert ahead is not None
        if quick is not None and not ahead.settled:
            # The process moved between the reads ahead: the signal read before smaps may
            # not describe what smaps showed, so none is stored (as below).
            quick = None
        return record_capture(db, proc, capture, label, taken_at, recorded, quick)
    if ahead is not None:
        # Its read failed (the process exiting, or running a new program, as it was
        # read): read again, as who the process is now; the signal read ahead is not
        # the one of this read.
        info, quick, taken_at = None, None, datetime.now(timezone.utc)
    if isinstance(recorded, Mapping_) and pipeline_asked():
        if info is None or info.stat is None:
            info = proc.info(pid)
        if (info.identity.pid, info.identity.start_ticks) not in recorded:
            # Never recorded: nothing to compare with, so the text can be written as it
            # is read and parsed.
            return record_new(db, proc, pid, info, smaps, label, taken_at, recorded)
    capture = proc.capture(pid, smaps=smaps, info=info)
    if quick is not None and proc.quick(pid, smaps=smaps, info=info).value != quick:
        # The process moved between the two reads: the signal read before smaps may not
        # describe what smaps showed, so none is stored (the next record reads smaps).
        quick = None
    return record_capture(db, proc, capture, label, taken_at, recorded, quick)


# Mappings of the pieces on either side a piece is classified with while the text is
# still being read: an object's mappings sit side by side, and its bss right above them.
CONTEXT = 64


class _NotNew(Exception):
    """Another writer recorded the process since it was looked up."""


class _SlowText(Exception):
    """A piece the fast parser refused: the whole text is parsed as one."""


def record_new(
    db: Database,
    proc: Proc,
    pid: int,
    info: ProcessInfo,
    smaps: bool,
    label: str | None,
    taken_at: datetime,
    recorded: Recorded_,
) -> Recorded:
    """Record a process never recorded before. A text longer than one piece
    (`pipeline.PIECE_BYTES`) is read and parsed on two threads while this one classifies
    and writes the pieces parsed so far, all in one transaction that commits only once
    the whole text was read and checked (`OverlappedRead`); a shorter one as
    `record_capture`. Only with MEMSNAP_PIPELINE=1 (`pipeline_asked`).

    A piece is classified with its neighbours' nearest mappings, before the whole text
    is known. Once it is, the whole is classified as `classify_capture` does, with the
    threads' stack pointers read after the text: should any kind differ from the one a
    row was written with, every row is written again, so the snapshot is always the one
    `record_capture` would store."""
    from memsnap.capture import pipeline

    reader = proc.map_reader(pid, smaps, info)
    try:
        first = reader.read(pipeline.PIECE_BYTES)
    except BaseException:
        reader.close()
        raise
    if len(first) < pipeline.PIECE_BYTES:
        return record_capture(db, proc, reader.capture(first), label, taken_at, recorded)
    guess_threads = proc.thread_stack_pointers(pid)
    read = pipeline.OverlappedRead(reader, first, lambda parsed: settle_deleted(proc, pid, parsed))

    def write(new: NewSnapshot) -> tuple[int, Totals]:
        if not new.created:
            raise _NotNew
        return _write_new(new, read, proc, info, guess_threads, label, taken_at)

    identity = info.identity
    try:
        with pipeline.switching_often():
            snapshot_id, totals = Writer(db).save_new_snapshot(
                identity, info.command, info.cmdline, info.exe, write
            )
        return Recorded(snapshot_id, identity.pid, info.command, totals)
    except _NotNew:
        # Recorded by another writer meanwhile: compared with what it stored.
        return record_capture(db, proc, read.whole_text(), label, taken_at)
    except _SlowText:
        pass
    except BaseException:
        read.abandon()
        raise
    return record_capture(db, proc, read.whole_text(), label, taken_at, recorded)


def _write_new(
    new: NewSnapshot,
    read: pipeline.OverlappedRead,
    proc: Proc,
    info: ProcessInfo,
    guess_threads: ThreadPointers,
    label: str | None,
    taken_at: datetime,
) -> tuple[int, Totals]:
    pid, exe, page_size = info.identity.pid, info.exe, info.page_size
    layouts = layouts_from_files(proc, pid)
    guessing = Threads(guess_threads.known, some_unknown=guess_threads.unknown > 0)
    pieces: list[Parsed] = []
    guessed: list[str] = []
    below: list[Mapping] = []
    piece = read.piece(0)
    while piece is not None:
        following = read.piece(len(pieces) + 1)
        above = following.mappings[:CONTEXT] if following is not None else []
        count = len(piece.mappings)
        window = [*below, *piece.mappings, *above]
        kinds = classify(window, exe, guessing, layouts, page_size)[len(below) : len(below) + count]
        new.add(piece.columns, kinds)
        guessed.extend(kinds)
        pieces.append(piece)
        below = [*below, *piece.mappings[-CONTEXT:]][-CONTEXT:]
        piece = following
    capture = read.capture()
    if not read.all_parsed:
        raise _SlowText
    mappings = list(chain.from_iterable(p.mappings for p in pieces))
    columns: Columns = tuple(
        list(chain.from_iterable(p.columns[c] for p in pieces)) for c in range(len(MAPPING_FIELDS))
    )
    threads = Threads(capture.threads.known, some_unknown=capture.threads.unknown > 0)
    kinds = classify(mappings, exe, threads, layouts, page_size)
    snapshot = replace(
        _info(capture, label, taken_at),
        replaced=replaced_among(executable_files(mappings), proc.file(pid, "root")),
        digest=stored_digest(capture.digest.value(), None),
    )
    return new.finish(snapshot, columns, kinds, rewrite=kinds != guessed)


IMPORTED_HOST = "(imported)"
# A mapping's fields that come from smaps, left out of an import with --no-smaps.
_HEADER_COLUMNS = MAPPING_FIELDS.index("deleted") + 1
_NO_SMAPS: dict[str, Any] = dict.fromkeys(MAPPING_FIELDS[_HEADER_COLUMNS:])


def _imported_info(
    pid: int,
    host: str,
    program: str | None,
    command: str | None,
    taken_at: datetime | None,
    label: str | None,
    page_size: int,
    has_smaps: bool,
) -> SnapshotInfo:
    """What an imported text's snapshot is stored as: a process of its own (no boot id or
    start time), named after its program unless told otherwise."""
    return SnapshotInfo(
        identity=ProcessIdentity(host, None, pid, None),
        command=command or (Path(program).name if program else "?"),
        cmdline=(),
        exe=program,
        taken_at=taken_at or datetime.now(timezone.utc),
        label=label,
        source="file",
        page_size=page_size,
        kernel=None,
        has_smaps=has_smaps,
    )


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
    info = _imported_info(
        pid, host, program, command, taken_at, label, page_size, parsed.has_smaps and smaps
    )
    columns = columns_of(mappings)
    snapshot_id, totals = Writer(db).save_snapshot(info, columns, kinds)
    return Recorded(snapshot_id, pid, info.command, totals)


# A saved text up to this size is parsed and classified whole, as a live read is; a larger
# one is read in pieces, three times over (`record_file`), so that memory stays bounded
# whatever its size: held whole, each mapping costs about 1.7 KiB, and a maps line can be
# as short as 17 bytes.
IN_MEMORY_IMPORT_BYTES = 1 << 20
IMPORT_PIECE_BYTES = 4 << 20


def record_file(
    db: Database,
    stream: BinaryIO,
    *,
    pid: int,
    label: str | None = None,
    host: str = IMPORTED_HOST,
    page_size: int = 4096,
    taken_at: datetime | None = None,
    smaps: bool = True,
) -> Recorded:
    """Store the saved text in `stream` (seekable, binary) as a snapshot of `pid`: whole
    when it is small, else streamed with bounded memory; the same snapshot either way."""
    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    if size <= IN_MEMORY_IMPORT_BYTES:
        raw = stream.read()
        if b"\0" in raw:
            raise MemsnapError("the text holds NUL bytes: not a maps or smaps text")
        return record_text(
            db, raw, pid=pid, label=label, host=host, page_size=page_size,
            taken_at=taken_at, smaps=smaps,
        )  # fmt: skip
    return _record_streamed(db, stream, pid, label, host, page_size, taken_at, smaps)


def _pieces(stream: BinaryIO) -> Iterator[tuple[list[bytes], int, Parsed]]:
    """The text parsed a piece at a time: (its lines, first line number, mappings)."""
    stream.seek(0)
    sums = Sums()
    for first_line, lines in read_pieces(stream, IMPORT_PIECE_BYTES):
        yield lines, first_line, parse_piece(lines, first_line, sums)


def _header_line(lines: list[bytes], first_line: int, index: int) -> tuple[int, str]:
    """The number and text of the `index`-th header line of a piece."""
    seen = -1
    for i, line in enumerate(lines):
        part = line.split(None, 1)
        if part and not part[0].endswith(b":"):
            seen += 1
            if seen == index:
                return first_line + i, line.decode("utf-8", "surrogateescape")
    raise AssertionError("no such header line")  # pragma: no cover


def _record_streamed(
    db: Database,
    stream: BinaryIO,
    pid: int,
    label: str | None,
    host: str,
    page_size: int,
    taken_at: datetime | None,
    smaps: bool,
) -> Recorded:
    classifier = StreamClassifier()
    # Pass 1: the whole text is checked (every error is met before anything is
    # written), its order, and which objects are executable.
    count, has_smaps, previous = 0, False, -1
    for lines, first_line, parsed in _pieces(stream):
        starts = parsed.columns[0]
        if starts and (starts[0] < previous or any(map(int.__gt__, starts, starts[1:]))):
            at = (
                0
                if starts[0] < previous
                else next(i + 1 for i in range(len(starts) - 1) if starts[i] > starts[i + 1])
            )
            lineno, line = _header_line(lines, first_line, at)
            raise ParseError(
                lineno, line, "mappings out of address order (a text this big must be "
                "in the kernel's order)"
            )  # fmt: skip
        if starts:
            previous = starts[-1]
        count += len(starts)
        has_smaps = has_smaps or parsed.has_smaps
        if not classifier.see_executable(parsed.mappings):
            raise MemsnapError(
                f"the text maps more than {MAX_STREAMED_OBJECTS} executable files: "
                "more than memsnap imports"
            )
    if not count:
        raise MemsnapError("the text holds no mappings")
    if not classifier.complete:
        # Pass 2: what classifying needs of the executable objects.
        for _, _, parsed in _pieces(stream):
            classifier.see_member(parsed.mappings)
    classifier.plan(layouts_from_files(None, None), page_size)
    program = classifier.program[0] if classifier.program is not None else None
    info = _imported_info(pid, host, program, None, taken_at, label, page_size, has_smaps and smaps)

    def batches() -> Iterator[tuple[Columns, list[str]]]:
        # Pass 3: each piece classified and handed to the writer.
        below: Mapping | None = None
        for _, _, parsed in _pieces(stream):
            kinds = []
            for m in parsed.mappings:
                kinds.append(classifier.kind(m, below))
                below = m
            columns = parsed.columns
            if not smaps:
                header = _HEADER_COLUMNS
                columns = (*columns[:header], *([None] * len(kinds) for _ in columns[header:]))
            yield columns, kinds

    snapshot_id, totals = Writer(db).save_streamed_snapshot(info, batches())
    return Recorded(snapshot_id, pid, info.command, totals)
