"""The text `record --from-file` imports, opened as a seekable file and refused early.

A regular file is judged by its size and read where it is; anything else (a pipe,
standard input, /dev/zero) is spooled a chunk at a time into an unnamed temporary file,
since an import is read more than once, and refused at the first NUL byte or once past
the limit, before it can fill memory or disk.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, BinaryIO, cast

from memsnap.errors import MemsnapError
from memsnap.units import human

# A saved text larger than this is refused before it is read: 60,000 mappings of smaps are
# about 45 MiB, and a kernel with vm.max_map_count=262144 (as Elasticsearch sets it) prints
# about 220 MiB of smaps for a process that uses them all.
MAX_IMPORT_BYTES = 256 << 20


@contextmanager
def read_import(source: str) -> Iterator[BinaryIO]:
    """The text of `--from-file` (`-` is standard input) as a seekable file, refusing
    what is not a maps text before it can fill memory or disk: a regular file is judged
    by its size and read where it is; anything else (a pipe, /dev/zero) is copied a chunk
    at a time into an unnamed temporary file (never held whole: an import is read more
    than once) and refused at the first NUL byte or once past the limit."""
    try:
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise MemsnapError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise MemsnapError(f"{source}: is a folder, not a maps text") from None
    except OSError as exc:
        raise MemsnapError(f"{source}: cannot read: {exc.strerror or exc}") from None
    with stream:
        found = os.fstat(stream.fileno()) if source != "-" else None
        if found is not None and stat.S_ISREG(found.st_mode):
            if found.st_size > MAX_IMPORT_BYTES:
                raise MemsnapError(_too_big(source))
            yield stream
            return
        with tempfile.TemporaryFile(prefix="memsnap-import-") as spool:
            _spool(source, stream, spool)
            yield cast(BinaryIO, spool)


def _spool(source: str, stream: BinaryIO, spool: IO[bytes]) -> None:
    total = 0
    try:
        while chunk := stream.read(1 << 20):
            if b"\0" in chunk:
                raise MemsnapError(f"{source}: holds NUL bytes: not a maps or smaps text")
            total += len(chunk)
            if total > MAX_IMPORT_BYTES:
                raise MemsnapError(_too_big(source))
            spool.write(chunk)
    except IsADirectoryError:
        raise MemsnapError(f"{source}: is a folder, not a maps text") from None
    except OSError as exc:
        raise MemsnapError(f"{source}: cannot read: {exc.strerror or exc}") from None
    spool.seek(0)


def _too_big(source: str) -> str:
    return f"{source}: larger than {human(MAX_IMPORT_BYTES)}: not a maps text memsnap imports"
