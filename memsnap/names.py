"""Names from /proc as text that databases and terminals accept. Pure.

The kernel's names (paths, command names, arguments) are bytes, not always UTF-8.
memsnap reads them with surrogate escapes, so no byte is lost while parsing; but neither
SQLite nor PostgreSQL stores a lone surrogate, nor does a UTF-8 terminal print one. Such
a byte is shown and stored as the four characters `\\xNN`; identity (for instance of a
path) is kept by hashing the real bytes.
"""

from __future__ import annotations


def escape_undecodable(text: str) -> str:
    """`text` unchanged when it is valid Unicode, else with each raw byte as `\\xNN`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def raw_bytes(text: str) -> bytes:
    """The bytes a name was read from."""
    return text.encode("utf-8", "surrogateescape")
