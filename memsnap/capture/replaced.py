"""Recording `replaced-code`'s fact: which executable files a process maps now have
another file at their path. Only a stat at record time can tell (the old file's inode is
gone from disk later), so it is taken with every live snapshot and stored with it.

Where the text was parsed anyway (a new or changed process), the executable files are
taken from its mappings. Where it was not (an unchanged copy, told from its digest or its
quick signal), they are found in the text: a pattern with a literal start finds the few
candidate lines (an executable mapping of a file, a non-zero inode) without being tried at
every byte of a smaps text of tens of megabytes, and each candidate's whole line is then
checked as a header. Either way the check costs a stat per executable object.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from memsnap.errors import ParseError
from memsnap.model import Region
from memsnap.parse import parse_text
from memsnap.replacement import encode, replaced_objects

# A maps (or smaps) header line whose permissions have `x`.
_EXEC_HEADER = re.compile(rb"[0-9a-fA-F]+-[0-9a-fA-F]+ [r-][w-]x[ps-] [^\n]*")
# Where such a line of a mapped file may be: its permissions' `x` up to a non-zero inode
# (anonymous and special mappings have inode 0 and are never a replaced file). A match can
# also lie inside a path, or in a line that is no header at all: its line is checked whole.
_EXEC_FILE_CANDIDATE = re.compile(rb"x[ps-] [0-9a-fA-F]+ [0-9a-fA-F]+:[0-9a-fA-F]+ +0*[1-9]")


def executable_mappings(raw: bytes) -> list[Region]:
    """The executable mappings of files in a maps or smaps text, parsed as `record`
    parses them (kind left unset: the rule needs only path, device and inode)."""
    lines: dict[int, bytes] = {}
    for found in _EXEC_FILE_CANDIDATE.finditer(raw):
        begin = raw.rfind(b"\n", 0, found.start()) + 1
        if begin in lines:
            continue
        end = raw.find(b"\n", found.end())
        line = raw[begin : len(raw) if end < 0 else end]
        if _EXEC_HEADER.fullmatch(line):
            lines[begin] = line
    if not lines:
        return []
    try:
        parsed = parse_text(b"\n".join(lines.values()) + b"\n")
    except ParseError:
        return []  # the whole text is parsed next and its error is the one reported
    return executable_files(parsed.mappings)


def executable_files(mappings: list[Region]) -> list[Region]:
    """The executable mappings of files among parsed mappings (see `executable_mappings`)."""
    return [m for m in mappings if m.inode != 0 and "x" in m.perms]


def stat_in_root(root: str) -> Callable[[str], os.stat_result | None]:
    """stat as the process sees a path: through its root (`/proc/PID/root`), so a
    process in a container is compared with its own files, not the host's."""

    def stat(path: str) -> os.stat_result | None:
        if not path.startswith("/"):
            return None
        try:
            return os.stat(root + path)
        except (OSError, ValueError):  # gone, unreadable, or a NUL in a hostile path
            return None

    return stat


def replaced_in(raw: bytes, root: str) -> str:
    """The replaced executable objects of a capture's text, as the snapshot row keeps
    them: a JSON list of [path, device, inode], sorted."""
    return replaced_among(executable_mappings(raw), root)


def replaced_among(executable: list[Region], root: str) -> str:
    """`replaced_in` for executable mappings already found (`executable_files`)."""
    return encode(replaced_objects(executable, stat_in_root(root)))
