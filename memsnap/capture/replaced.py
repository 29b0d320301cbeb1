"""Recording `replaced-code`'s fact: which executable files a process maps now have
another file at their path. Only a stat at record time can tell (the old file's inode is
gone from disk later), so it is taken with every live snapshot and stored with it.

The executable mappings are found with one pattern over the text's header lines (a
process maps a few dozen such objects among thousands of lines), so the check costs a
stat per object even when the snapshot turns out to be an unchanged copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from memsnap.checking import encode
from memsnap.errors import ParseError
from memsnap.findings import replaced_objects
from memsnap.model import Region
from memsnap.parse import parse_text

# A maps (or smaps) header line whose permissions have `x`: smaps' field lines start
# with a name, never with an address range.
_EXEC_HEADER = re.compile(rb"^[0-9a-fA-F]+-[0-9a-fA-F]+ [r-][w-]x[ps-] [^\n]*$", re.MULTILINE)


def executable_mappings(raw: bytes) -> list[Region]:
    """The executable mappings of a maps or smaps text, parsed as `record` parses them
    (kind left unset: the rule needs only path, device and inode)."""
    lines = _EXEC_HEADER.findall(raw)
    if not lines:
        return []
    try:
        parsed = parse_text(b"\n".join(lines) + b"\n")
    except ParseError:
        return []  # the whole text is parsed next and its error is the one reported
    return parsed.mappings


def executable_headers(raw: bytes) -> list[bytes]:
    """The header lines of a text's executable mappings: those of a text read a piece
    at a time, joined with newlines, give the whole text's `replaced_in`."""
    return _EXEC_HEADER.findall(raw)


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
    """The replaced executable objects of a capture, as the snapshot row keeps them: a
    JSON list of [path, device, inode], sorted."""
    return encode(replaced_objects(executable_mappings(raw), stat_in_root(root)))
