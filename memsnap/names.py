"""Names from /proc and from databases as text that databases and terminals accept. Pure.

The kernel's names (paths, command names, arguments) are bytes, not always UTF-8.
memsnap reads them with surrogate escapes, so no byte is lost while parsing; but neither
SQLite nor PostgreSQL stores a lone surrogate, nor does a UTF-8 terminal print one. Such
a byte is shown and stored as the four characters `\\xNN`; identity (for instance of a
path) is kept by hashing the real bytes.

Every such name is also hostile: any local user chooses its process's command, arguments
and file names, and other hosts write the rows of a shared database. A control character
in them (an escape sequence, a carriage return, a newline) would drive the reader's
terminal. `visible` is the one place that makes them harmless for text output: every C0
control, DEL and C1 control becomes `\\xNN`, the same spelling as an undecodable byte.
"""

from __future__ import annotations

import re

# C0 controls, DEL and the C1 controls (U+0080-U+009F: some terminals act on them too).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The same but a newline: a whole document's own lines are searched for nothing else (a
# table of 60,000 rows has as many newlines, each of which would be a Python call).
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
# memsnap's own colour codes (Select Graphic Rendition), the only sequences it writes.
_SGR = re.compile("(\x1b\\[[0-9;]*m)")


def escape_undecodable(text: str) -> str:
    """`text` unchanged when it is valid Unicode, else with each raw byte as `\\xNN`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _hex(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def visible(text: str, *, lines: bool = False, colours: bool = False) -> str:
    """`text` with undecodable bytes and control characters shown as `\\xNN`.

    Data (a command, a path, a label) is passed with the defaults: nothing of it may
    move the cursor, not even a newline. A whole document about to be printed passes
    `lines=True` (its own newlines stay) and, when memsnap painted it, `colours=True`
    (memsnap's colour codes stay; the data inside was made visible before painting).
    """
    text = escape_undecodable(text)
    control = _CONTROL_BUT_NEWLINE if lines else _CONTROL
    if colours and "\x1b" in text:
        # split() with a group keeps the colour codes at the odd positions.
        parts = _SGR.split(text)
        return "".join(p if i % 2 else control.sub(_hex, p) for i, p in enumerate(parts))
    if control.search(text) is None:
        return text
    return control.sub(_hex, text)


def visible_column(column: list[str]) -> list[str]:
    """`visible` for every cell of a table column (one scan when none needs it)."""
    joined = "".join(column)
    if _CONTROL.search(joined) is None:
        try:
            joined.encode("utf-8")
            return column
        except UnicodeEncodeError:
            pass
    return [visible(cell) for cell in column]


def raw_bytes(text: str) -> bytes:
    """The bytes a name was read from."""
    return text.encode("utf-8", "surrogateescape")
