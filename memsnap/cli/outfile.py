"""`--output FILE`: a reading command's document written to a file, privately.

Maps reveal paths and layout, so the file is created 0600. It is written whole to a
temporary file beside it and renamed over FILE: a failure halfway leaves any earlier
FILE as it was, and a symlink planted at FILE is replaced, never written through to a
file. A FILE that already exists and is not a regular file (a FIFO, `/dev/stdout`, a
terminal) is written to in place, as a shell's `>` would: renaming over it would replace
a device node.
"""

from __future__ import annotations

import os
import stat
import tempfile

from memsnap.errors import MemsnapError


def write_private(path: str, text: str) -> int:
    """Write `text` (UTF-8) to `path`; the number of bytes written."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory")
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(path, "wb") as out:
                out.write(data)
            return len(data)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".memsnap-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o600)  # mkstemp's mode already; said again for the reader
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise MemsnapError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(data)
