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
- anything else raises `ParseError` naming the 1-based line number and its text.

Header lines are told from smaps field lines by their first token: a field's ends in a
colon, a header's is an address range.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import gt
from typing import Any, cast

from memsnap.errors import ParseError
from memsnap.model import SIZE_ATTRS, SMAPS_FIELDS, Columns, Mapping, columns_of

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


def _header_fields(line: str, lineno: int) -> dict[str, object]:
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


def _size_bytes(value: str, line: str, lineno: int) -> int:
    number, _, unit = value.strip().partition(" ")
    if not number.isdigit() or unit.strip() not in ("kB", ""):
        raise ParseError(lineno, line, "not a size in kB")
    return int(number) * 1024


def parse_lines(lines: Iterable[str]) -> Parsed:
    """Parse the lines of a maps or smaps text (without their newlines)."""
    mappings: list[Mapping] = []
    current: dict[str, object] | None = None
    has_smaps = False
    for lineno, line in enumerate(lines, start=1):
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
                current[attr] = _size_bytes(value, line, lineno)
            elif key == "VmFlags":
                current["vm_flags"] = value.strip()
            continue
        if current is not None:
            mappings.append(Mapping(**current))  # type: ignore[arg-type]
        current = _header_fields(line, lineno)
    if current is not None:
        mappings.append(Mapping(**current))  # type: ignore[arg-type]
    return Parsed.of(mappings, has_smaps)


_VMFLAGS = b"VmFlags:"
_KIB = 1024
_NO_PATH: tuple[None, bool] = (None, False)
# The fast path reads the kernel's bytes as they are: splitting 1.5 million lines of
# bytes is cheaper than decoding the text first and splitting strings.
_KEY_TO_ATTR_BYTES = {key.encode(): attr for key, attr in _KEY_TO_ATTR.items()}
# A Mapping from a tuple of its fields, without a Python-level call per mapping.
_new_mapping = cast(Callable[[tuple[object, ...]], Mapping], partial(tuple.__new__, Mapping))


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
    try:
        return list(map(_KIB.__mul__, map(int, tokens[1::3])))
    except ValueError:
        return None


def _parse_strided(lines: list[bytes], stride: int | None = None) -> Parsed | None:
    """The fast path: slice the lines by the block stride and convert whole columns at
    once. Returns None whenever anything is irregular; the line-by-line parser then
    takes over (and names the offending line)."""
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
    decoded = [decode_path(_decode(p)) if p else _NO_PATH for p in raw_paths]
    none: list[None] = [None] * count
    columns: Columns = (
        first,
        last,
        _decoded_each(perms),
        list(map(int, offsets, repeat(16))),
        _decode(b"\n".join(devs).lower()).split("\n"),
        inode_numbers,
        [p for p, _ in decoded],
        [d for _, d in decoded],
        *(fields.get(attr, none) for attr in SIZE_ATTRS),
        fields.get("vm_flags", none),
    )
    mappings = list(map(_new_mapping, zip(*columns, strict=True)))
    return Parsed(mappings, stride > 1, columns)


def _parse_in_pieces(text: bytes, budget: int) -> Parsed | None:
    """The fast path over a text cut into pieces of about `budget` bytes at block
    boundaries: 60,000 mappings of smaps are 1.5 million lines, and holding them all
    at once would cost more memory than everything else together."""
    mappings: list[Mapping] = []
    columns: Columns = tuple([] for _ in Mapping._fields)
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
        parsed = _parse_strided(lines, stride or None)
        if parsed is None:
            return None
        if not stride and lines:
            stride = _block_stride(lines)
        mappings.extend(parsed.mappings)
        for whole_column, piece_column in zip(columns, parsed.columns, strict=True):
            whole_column.extend(piece_column)
    return Parsed(mappings, stride > 1, columns)


def parse_text(text: str | bytes, piece: int = 4 << 20) -> Parsed:
    """Parse a whole maps or smaps text, as read (bytes) or decoded (str, undecodable
    bytes as surrogate escapes); smaps when any field line is present."""
    raw: bytes | None = text if isinstance(text, bytes) else None
    if raw is None:
        try:
            raw = str(text).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a str that never came from bytes: lines it is
            raw = None
    fast = _parse_in_pieces(raw, piece) if raw is not None else None
    if fast is not None:
        return fast
    lines = (_decode(text) if isinstance(text, bytes) else text).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return parse_lines(lines)
