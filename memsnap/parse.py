"""Parsing /proc/PID/maps and /proc/PID/smaps text into `Mapping`s: pure, no I/O.

The kernel prints one header line per mapping::

    start-end perms offset major:minor inode [padding path]

and, in smaps, a block of `Key: value [kB]` lines after each header. What this module
promises:

- every field of the header is kept: addresses of any width (8 digits on 32-bit, 16 for
  `[vsyscall]`), device majors of three hex digits, inodes above 2**32;
- the path is everything after the inode with the padding stripped; the kernel's `\\012`
  escape is turned back into a newline, and a trailing ` (deleted)` becomes a flag (the
  suffix is not part of the name, but the fact matters: a process still running a
  deleted library is what operators look for after an upgrade);
- smaps blocks may carry unknown keys, miss keys (old kernels have no `Pss`), have an
  empty `VmFlags:` or tabs in the padding: known sizes are kept in bytes, unknown keys
  are skipped, a missing size stays None;
- anything else raises `ParseError` naming the 1-based line number and its text, and so
  does what no kernel prints or no database column holds: `/proc/PID/smaps_rollup` (one
  sum over all mappings, not a map), a path longer than PATH_MAX can be once escaped, a
  size past a signed 64-bit column in bytes, and a snapshot whose totals would overflow
  theirs (the line where the sum passes the limit is named);
- a saved text (`saved=True`: an import) may have travelled through Windows: a CRLF line
  end is read as LF (the kernel itself never ends a line with CR; a live read keeps a
  path's trailing CR, which is part of the name).

`read_pieces` and `parse_piece` parse a saved text a piece at a time, so a 256 MiB import
never needs the whole text in memory.

Three parsers, tried in turn, give the same `Parsed`: the optional C scanner
(memsnap/_smaps.c, when it was built at install and MEMSNAP_NATIVE is not 0), which only
takes texts of the regular shape a kernel prints; the column parser below, which slices
the lines by the block stride; and the line parser, which also names a bad line.

Header lines are told from smaps field lines by their first token: a field's ends in a
colon, a header's is an address range.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import gt
from typing import TYPE_CHECKING, Any, BinaryIO

from memsnap import native
from memsnap.errors import ParseError
from memsnap.model import (
    MAPPING_FIELDS,
    SIZE_ATTRS,
    SMAPS_FIELDS,
    UNNAMED_KIND,
    Columns,
    Mapping,
    columns_of,
    regions_of,
)

# One header line: start-end perms offset major:minor inode [padding path].
_HEADER_PATTERN = (
    r"([0-9a-fA-F]{1,16})-([0-9a-fA-F]{1,16}) ([r-][w-][x-][ps]) ([0-9a-fA-F]{1,16}) "
    r"([0-9a-fA-F]{1,8}:[0-9a-fA-F]{1,8}) +([0-9]{1,20})(?:[ \t]+(.*))?"
)
_HEADER = re.compile(_HEADER_PATTERN)
# The same, for all headers of a text at once, on the kernel's bytes (`.` never crosses
# a newline; each match must be a whole line).
_HEADERS = re.compile(f"^{_HEADER_PATTERN}$".encode(), re.MULTILINE)
_DELETED = " (deleted)"
_KEY_TO_ATTR: dict[str, str] = {key: attr for attr, key in SMAPS_FIELDS}
_MAX_ADDRESS = 2**64
# A size column is a signed 64-bit integer (bytes); a total of addresses is unsigned.
MAX_SIZE = 2**63 - 1
MAX_TOTAL_SIZE = 2**64 - 1
# The longest path the kernel prints: PATH_MAX bytes (4096 with the NUL), every byte
# possibly escaped as `\ooo` (four), then ` (deleted)`.
PATH_MAX = 4096
MAX_PATH_TEXT = 4 * (PATH_MAX - 1) + len(" (deleted)")
# A header line with every field at its widest, then such a path.
MAX_LINE = 16 + 1 + 16 + 1 + 4 + 1 + 16 + 1 + 17 + 1 + 20 + 72 + MAX_PATH_TEXT
# The kernel prints a fixed set of keys per smaps block (about 25 today).
MAX_BLOCK_LINES = 256
_ROLLUP = "[rollup]"
_ROLLUP_WHY = (
    "this is /proc/PID/smaps_rollup (one sum over all mappings), not a memory map: "
    "import /proc/PID/smaps or /proc/PID/maps"
)
# Totals the snapshot stores; `uss` is private clean + private dirty.
_TOTAL_ATTRS = (*SIZE_ATTRS, "uss")


class Sums:
    """Running totals over the mappings parsed so far, to refuse the line at which a
    snapshot's total would no longer fit its column (instead of a database overflow)."""

    __slots__ = ("size", "values")

    def __init__(self) -> None:
        self.size = 0
        self.values = dict.fromkeys(_TOTAL_ATTRS, 0)

    def add_size(self, size: int, lineno: int, line: str) -> None:
        self.size += size
        if self.size > MAX_TOTAL_SIZE:
            raise ParseError(lineno, line, "the snapshot's total size would not fit 64 bits")

    def add(self, attr: str, value: int, lineno: int, line: str) -> None:
        for name in (attr, "uss") if attr in ("private_clean", "private_dirty") else (attr,):
            total = self.values[name] + value
            if total > MAX_SIZE:
                raise ParseError(
                    lineno, line, f"the snapshot's total {name} would not fit a 64-bit column"
                )
            self.values[name] = total

    def try_add(self, size: int, values: dict[str, int]) -> bool:
        """Add a whole piece's sums if every total still fits; else change nothing."""
        if self.size + size > MAX_TOTAL_SIZE:
            return False
        new = dict(self.values)
        for attr, value in values.items():
            new[attr] += value
        new["uss"] += values.get("private_clean", 0) + values.get("private_dirty", 0)
        if any(v > MAX_SIZE for v in new.values()):
            return False
        self.size += size
        self.values = new
        return True


@dataclass(frozen=True, slots=True)
class Parsed:
    """The mappings of one maps or smaps text, in the order they were printed."""

    mappings: list[Mapping]
    has_smaps: bool
    # The same mappings field by field, as the fast path builds them anyway: the writer
    # stores these without transposing the tuples back.
    columns: Columns = field(compare=False, repr=False)

    @staticmethod
    def of(mappings: list[Mapping], has_smaps: bool) -> Parsed:
        return Parsed(mappings, has_smaps, columns_of(mappings))


def decode_path(raw: str | None) -> tuple[str | None, bool]:
    """Turn the text after the inode into (path, deleted): suffix off, escapes undone."""
    if not raw or not raw.strip():
        return None, False
    deleted = raw.endswith(_DELETED)
    if deleted:
        raw = raw[: -len(_DELETED)]
    if "\\012" in raw:
        raw = raw.replace("\\012", "\n")
    return raw, deleted


def encode_path(path: str | None, deleted: bool) -> str:
    """The inverse of `decode_path`: the path as the kernel prints it in maps."""
    if path is None:
        return ""
    text = path.replace("\n", "\\012")
    return text + _DELETED if deleted else text


def format_header(m: Mapping) -> str:
    """A mapping's maps line as the kernel prints it: the inode is followed by a space,
    and a path starts at column 73 (or right there, when the fields are wider)."""
    head = f"{m.start:08x}-{m.end:08x} {m.perms} {m.offset:08x} {m.dev} {m.inode} "
    path = encode_path(m.path, m.deleted)
    return head.ljust(73) + path if path else head


def _header_fields(line: str, lineno: int) -> dict[str, Any]:
    match = _HEADER.fullmatch(line)
    if match is None:
        raise ParseError(lineno, line, "not a maps line")
    start_s, end_s, perms, offset_s, dev, inode_s, raw_path = match.groups()
    start, end = int(start_s, 16), int(end_s, 16)
    inode = int(inode_s)
    if end < start:
        raise ParseError(lineno, line, "mapping ends before it starts")
    if inode >= _MAX_ADDRESS:
        raise ParseError(lineno, line, "inode out of range")
    if raw_path is not None and len(raw_path) > PATH_MAX and _too_long(raw_path):
        raise ParseError(lineno, line, "a path longer than the kernel prints")
    if raw_path == _ROLLUP:
        raise ParseError(lineno, line, _ROLLUP_WHY)
    # The padding the kernel adds before the path is whitespace; a name that ends in
    # spaces keeps them, but a line that is only padding has no path.
    if raw_path is not None and not raw_path.strip():
        raw_path = None
    path, deleted = decode_path(raw_path)
    return {
        "start": start,
        "end": end,
        "perms": perms,
        "offset": int(offset_s, 16),
        "dev": dev.lower(),
        "inode": inode,
        "path": path,
        "deleted": deleted,
    }


def _too_long(raw_path: str) -> bool:
    return len(raw_path.encode("utf-8", "surrogateescape")) > MAX_PATH_TEXT


_DIGITS = re.compile(r"[0-9]+")


def _size_bytes(value: str, line: str, lineno: int) -> int:
    number, _, unit = value.strip().partition(" ")
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
    if not _DIGITS.fullmatch(number) or unit.strip() not in ("kB", ""):
        raise ParseError(lineno, line, "not a size in kB")
    if len(number) > 20 or int(number) * 1024 > MAX_SIZE:
        raise ParseError(lineno, line, "a size too big to store (past 2**63-1 bytes)")
    return int(number) * 1024


def parse_lines(
    lines: Iterable[str], *, saved: bool = False, first_line: int = 1, sums: Sums | None = None
) -> Parsed:
    """Parse the lines of a maps or smaps text (without their newlines); `saved`: a CR
    ending a line is a CRLF line end, not part of a name. `first_line` numbers the first
    of `lines`; `sums` carries the totals of what came before (a piece of a text)."""
    mappings: list[Mapping] = []
    current: dict[str, Any] | None = None
    has_smaps = False
    sums = sums if sums is not None else Sums()
    for lineno, line in enumerate(lines, start=first_line):
        if saved and line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            continue
        first = line.split(None, 1)[0]
        if first.endswith(":"):
            if current is None:
                raise ParseError(lineno, line, "smaps field before any mapping")
            has_smaps = True
            key = first[:-1]
            value = line[len(line) - len(line.lstrip()) + len(first) :]
            attr = _KEY_TO_ATTR.get(key)
            if attr is not None:
                size = _size_bytes(value, line, lineno)
                old = current.get(attr)
                if isinstance(old, int):  # a key printed twice: the last one counts
                    sums.add(attr, -old, lineno, line)
                sums.add(attr, size, lineno, line)
                current[attr] = size
            elif key == "VmFlags":
                current["vm_flags"] = value.strip()
            continue
        if current is not None:
            mappings.append(Mapping(**current))
        current = _header_fields(line, lineno)
        sums.add_size(current["end"] - current["start"], lineno, line)
    if current is not None:
        mappings.append(Mapping(**current))
    return Parsed.of(mappings, has_smaps)


_VMFLAGS = b"VmFlags:"
_KIB = 1024
_NO_PATH: tuple[None, bool] = (None, False)
# The fast path reads the kernel's bytes as they are: splitting 1.5 million lines of
# bytes is cheaper than decoding the text first and splitting strings.
_KEY_TO_ATTR_BYTES = {key.encode(): attr for key, attr in _KEY_TO_ATTR.items()}


if TYPE_CHECKING:
    from memsnap._smaps import Scanned  # declared once, in the extension's stub

    _Scan = Callable[[bytes, tuple[bytes, ...], int, int], Scanned | None]


_EXTENSION = native.extension()
# The C scanner, when memsnap uses its extension (`memsnap.native`).
NATIVE: _Scan | None = None if _EXTENSION is None else _EXTENSION.scan
# The kept keys in SIZE_ATTRS order, as the C scanner looks them up.
_NATIVE_KEYS = tuple(key.encode() for _, key in SMAPS_FIELDS)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _decoded_each(items: Sequence[bytes]) -> list[str]:
    """Many short byte strings decoded with one call rather than one call each (none
    holds a newline: each is part of one line)."""
    return _decode(b"\n".join(items)).split("\n") if items else []


def _block_stride(lines: list[bytes]) -> int:
    """Lines per mapping when every smaps block has the same keys (one kernel prints
    them in one fixed order); the position of the second header."""
    for i in range(1, len(lines)):
        first = lines[i].split(None, 1)
        if not first or not first[0].endswith(b":"):
            return i
    return len(lines)


def _column_sizes(column: list[bytes], key: bytes) -> list[int | None] | None:
    """The sizes of one smaps key over all blocks, in bytes; None if any is odd."""
    tokens = b" ".join(column).split()
    if len(tokens) != 3 * len(column) or tokens[0::3].count(key + b":") != len(column):
        return None
    if tokens[2::3].count(b"kB") != len(column):
        return None
    numbers = tokens[1::3]
    # ASCII digits only (int() would take "+1" or "1_0"), and at most 16 of them (the
    # line parser names a bigger value); each column is converted once.
    if max(map(len, numbers)) > 16 or not b"".join(numbers).isdigit():
        return None
    kib = list(map(int, numbers))
    if max(kib) * _KIB > MAX_SIZE:
        return None
    sizes: list[int | None] = list(map(_KIB.__mul__, kib))
    return sizes


def _parse_strided(
    lines: list[bytes], stride: int | None = None, sums: Sums | None = None
) -> Parsed | None:
    """The fast path: slice the lines by the block stride and convert whole columns at
    once. Returns None whenever anything is irregular or out of bounds; the line-by-line
    parser then takes over (and names the offending line). `sums` gains this text's
    totals when it is parsed."""
    if not lines:
        return Parsed.of([], False)
    stride = stride or _block_stride(lines)
    if len(lines) % stride:
        return None
    headers = lines[0::stride]
    matches = _HEADERS.findall(b"\n".join(headers))
    if len(matches) != len(headers):
        return None
    starts, ends, perms, offsets, devs, inodes, raw_paths = zip(*matches, strict=True)
    count = len(headers)
    fields: dict[str, list[Any]] = {}
    for j in range(1, stride):
        key = lines[j].split(b":", 1)[0]
        if key not in _KEY_TO_ATTR_BYTES and key != b"VmFlags":
            # A key memsnap does not keep is not even looked at: had any block a key in
            # another place, a kept key's column would hold a stranger and fail its check.
            continue
        column = lines[j::stride]
        if key == b"VmFlags":
            if sum(1 for line in column if line.startswith(_VMFLAGS)) != count:
                return None
            flags = _decoded_each([line[len(_VMFLAGS) :] for line in column])
            fields["vm_flags"] = [f.strip() for f in flags]
            continue
        sizes = _column_sizes(column, key)
        if sizes is None:
            return None
        fields[_KEY_TO_ATTR_BYTES[key]] = sizes
    first = list(map(int, starts, repeat(16)))
    last = list(map(int, ends, repeat(16)))
    inode_numbers = list(map(int, inodes))
    if any(map(gt, first, last)) or max(inode_numbers) >= _MAX_ADDRESS:
        return None  # the line parser names the line
    if max(map(len, raw_paths)) > MAX_PATH_TEXT or _ROLLUP.encode() in raw_paths:
        return None
    piece_sums = {attr: sum(fields[attr]) for attr in SIZE_ATTRS if attr in fields}
    if not (sums or Sums()).try_add(sum(last) - sum(first), piece_sums):
        return None
    return _assemble(
        (
            first,
            last,
            _decoded_each(perms),
            list(map(int, offsets, repeat(16))),
            _decode(b"\n".join(devs).lower()).split("\n"),
            inode_numbers,
        ),
        raw_paths,
        fields,
        stride > 1,
    )


def _assemble(
    head: tuple[list[int], list[int], list[str], list[int], list[str], list[int]],
    raw_paths: Sequence[bytes],
    fields: dict[str, list[Any]],
    has_smaps: bool,
) -> Parsed:
    """The Parsed of checked columns: a header's six numbers and words, the raw paths
    (decoded here), the smaps columns that were present (by attribute)."""
    decoded = [decode_path(_decode(p)) if p else _NO_PATH for p in raw_paths]
    none: list[None] = [None] * len(raw_paths)
    columns: Columns = (
        *head,
        [p for p, _ in decoded],
        [d for _, d in decoded],
        *(fields.get(attr, none) for attr in SIZE_ATTRS),
        fields.get("vm_flags", none),
    )
    mappings = regions_of(columns, [UNNAMED_KIND] * len(raw_paths))
    return Parsed(mappings, has_smaps, columns)


def _parse_native(text: bytes, sums: Sums) -> Parsed | None:
    """The C scanner's Parsed of a whole text, or None when it is not there or finds the
    text irregular (then the Python parsers take over, unchanged). `sums` gains the
    text's totals when it is parsed."""
    if NATIVE is None:
        return None
    scanned = NATIVE(text, _NATIVE_KEYS, MAX_PATH_TEXT, MAX_SIZE // _KIB)
    if scanned is None:
        return None
    stride, first, last, perms, offsets, devs, inodes, raw_paths, sizes, flags = scanned
    fields: dict[str, list[Any]] = {
        attr: column for attr, column in zip(SIZE_ATTRS, sizes, strict=True) if column is not None
    }
    # The same totals, and the same refusal, as the column parser's.
    piece_sums = {attr: sum(column) for attr, column in fields.items()}
    if not sums.try_add(sum(last) - sum(first), piece_sums):
        return None
    if flags is not None:
        fields["vm_flags"] = flags
    return _assemble((first, last, perms, offsets, devs, inodes), raw_paths, fields, stride > 1)


def _parse_in_pieces(text: bytes, budget: int, sums: Sums | None = None) -> Parsed | None:
    """The fast path over a text cut into pieces of about `budget` bytes at block
    boundaries: 60,000 mappings of smaps are 1.5 million lines, and holding them all
    at once would cost more memory than everything else together."""
    sums = sums if sums is not None else Sums()
    # The C scanner makes no object per line: it takes the whole text at once.
    native = _parse_native(text, sums)
    if native is not None:
        return native
    mappings: list[Mapping] = []
    columns: Columns = tuple([] for _ in MAPPING_FIELDS)
    carry: list[bytes] = []
    stride = 0
    pos, size = 0, len(text)
    while pos < size:
        end = size if pos + budget >= size else text.rfind(b"\n", pos, pos + budget) + 1
        if end <= pos:  # one line longer than the budget
            end = text.find(b"\n", pos + budget) + 1 or size
        lines = carry + text[pos:end].split(b"\n")
        pos = end
        if pos >= size:
            while lines and not lines[-1].strip():
                lines.pop()
            carry = []
        else:
            lines.pop()  # the piece ends with a newline: the empty string after it
            if not stride:
                found = _block_stride(lines)
                if found >= len(lines):
                    carry = lines  # not even one whole block yet
                    continue
                stride = found
            whole = len(lines) - len(lines) % stride
            lines, carry = lines[:whole], lines[whole:]
        parsed = _parse_strided(lines, stride or None, sums)
        if parsed is None:
            return None
        if not stride and lines:
            stride = _block_stride(lines)
        mappings.extend(parsed.mappings)
        for whole_column, piece_column in zip(columns, parsed.columns, strict=True):
            whole_column.extend(piece_column)
    return Parsed(mappings, stride > 1, columns)


def parse_text(text: str | bytes, piece: int = 4 << 20, *, saved: bool = False) -> Parsed:
    """Parse a whole maps or smaps text, as read (bytes) or decoded (str, undecodable
    bytes as surrogate escapes); smaps when any field line is present. `saved`: a text
    that was saved and carried (an import), whose CRLF line ends are LF."""
    raw: bytes | None = text if isinstance(text, bytes) else None
    if raw is None:
        try:
            raw = str(text).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a str that never came from bytes: lines it is
            raw = None
    if saved and raw is not None and b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    fast = _parse_in_pieces(raw, piece) if raw is not None else None
    if fast is not None:
        return fast
    lines = (_decode(raw) if raw is not None else str(text)).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return parse_lines(lines, saved=saved)


# --- a saved text a piece at a time -----------------------------------------------------


def _is_header(line: bytes) -> bool:
    first = line.split(None, 1)
    return bool(first) and not first[0].endswith(b":")


def _refuse_long_line(lines: list[bytes], first_line: int) -> None:
    if lines and max(map(len, lines)) > MAX_LINE:
        i = next(i for i, line in enumerate(lines) if len(line) > MAX_LINE)
        raise ParseError(
            first_line + i, _decode(lines[i][:200]), "a line longer than the kernel prints"
        )


def read_pieces(stream: BinaryIO, budget: int = 4 << 20) -> Iterator[tuple[int, list[bytes]]]:
    """The lines of a saved text (CRLF read as LF) in pieces of about `budget` bytes:
    (number of the piece's first line, its lines). A piece holds whole smaps blocks: it
    ends right before a header line. Refused as they are met, naming the line: a NUL
    byte, a line longer than the kernel prints, a block longer than MAX_BLOCK_LINES (so
    that no piece, and no line, can grow past a bound)."""
    first_line = 1
    pending: list[bytes] = []  # whole lines, not yet handed out
    partial = b""  # the start of a line whose end has not been read yet
    while True:
        chunk = stream.read(budget)
        if b"\0" in chunk:
            at = first_line + len(pending) + (partial + chunk[: chunk.index(b"\0")]).count(b"\n")
            raise ParseError(at, "", "a NUL byte: not a maps or smaps text")
        data = partial + chunk
        if chunk:
            cut = data.rfind(b"\n") + 1
            data, partial = data[:cut], data[cut:]
            if len(partial) > MAX_LINE:
                at = first_line + len(pending) + data.count(b"\n")
                raise ParseError(at, _decode(partial[:200]), "a line longer than the kernel prints")
        else:
            partial = b""
        if data:
            lines = data.replace(b"\r\n", b"\n").split(b"\n")
            if not lines[-1]:
                lines.pop()
            _refuse_long_line(lines, first_line + len(pending))
            pending.extend(lines)
        if not chunk:
            if pending:
                yield first_line, pending
            return
        # Hand out everything before the last header line; the block it starts may go on.
        last = len(pending) - 1
        floor = max(-1, last - MAX_BLOCK_LINES - 1)
        while last > floor and not _is_header(pending[last]):
            last -= 1
        if last == floor and len(pending) > MAX_BLOCK_LINES:
            at = first_line + len(pending) - 1
            raise ParseError(
                at, _decode(pending[-1][:200]), "an smaps block longer than a kernel prints"
            )
        if last > 0:
            yield first_line, pending[:last]
            first_line += last
            pending = pending[last:]


def parse_piece(lines: list[bytes], first_line: int, sums: Sums) -> Parsed:
    """One piece from `read_pieces`: the fast path, else the line parser (which names
    the line at fault, numbered from `first_line`). `sums` carries the totals so far."""
    fast = _parse_native(b"\n".join(lines), sums)
    if fast is not None:
        return fast
    fast = _parse_strided(lines, None, sums)
    if fast is not None:
        return fast
    return parse_lines(_decoded_each(lines), saved=True, first_line=first_line, sums=sums)
