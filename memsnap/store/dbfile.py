"""The SQLite file behind a memsnap database: what may be opened, and how it is created.

Everything here happens before SQLite touches the path, because SQLite follows symbolic
links, blocks on a FIFO, leaves a `-journal` beside a device and adopts any empty file:

- A new file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, in folders created
  0700 whatever the umask (maps reveal paths and layout). A name that appears meanwhile
  (a planted dangling link, another memsnap) is then judged like any existing file.
- An existing name must be a regular file (not a link, FIFO, device or folder), owned by
  the caller or root and writable by no one else: a file someone else owns or may write
  could be rewritten under the caller (or is a trap planted in a shared folder). Its
  `-wal` and `-journal` obey the same rule, since SQLite replays them into the file.
- Only `record` creates a database: for a reading command a missing file means nothing
  was recorded there yet.

The file's header says the rest without SQLite: the magic, the journal mode, and the
`application_id` by which memsnap marks its own databases ("MSNP").
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from memsnap.errors import DatabaseError, NotFoundError

SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = int.from_bytes(b"MSNP", "big")
_HEADER = 100
# SQLite replays these into the database file; `-shm` is only an index SQLite rebuilds.
_REPLAYED = ("-wal", "-journal")


@dataclass(frozen=True, slots=True)
class FileLook:
    """What the file says about itself before SQLite opens it."""

    path: Path
    empty: bool  # no bytes at all: a new database
    wal: bool  # the header's journal mode is WAL
    application_id: int
    writable: bool  # the caller may write it (else it is opened read-only)
    owner: int
    mode: int
    wal_file: bool  # a `-wal` beside it holds frames not yet in the file


def look(path: Path, create: bool) -> FileLook:
    """Check `path` (creating it when `create` and it is missing) and read its header."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        if not create:
            raise NotFoundError(f"nothing recorded in {path} yet") from None
        _create(path)
        st = _lstat(path)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot open the database: {exc.strerror}") from None
    _check(path, st)
    for suffix in _REPLAYED:
        side = Path(f"{path}{suffix}")
        try:
            side_st = os.lstat(side)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DatabaseError(f"{side}: cannot look at it: {exc.strerror}") from None
        _check(side, side_st)
    head = _header(path, st)
    if head and head[: len(SQLITE_MAGIC)] != SQLITE_MAGIC:
        raise DatabaseError(f"{path}: not a memsnap database (not SQLite); left untouched")
    if head and len(head) < _HEADER:
        raise DatabaseError(f"{path}: not a usable SQLite database (truncated); left untouched")
    try:
        wal_file = os.stat(f"{path}-wal").st_size > 0
    except OSError:
        wal_file = False
    return FileLook(
        path=path,
        empty=not head,
        wal=bool(head) and head[18] == 2,
        application_id=int.from_bytes(head[68:72], "big") if head else 0,
        writable=os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids),
        owner=st.st_uid,
        mode=stat.S_IMODE(st.st_mode),
        wal_file=wal_file,
    )


def _lstat(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot open the database: {exc.strerror}") from None


def _check(path: Path, st: os.stat_result) -> None:
    """Refuse what memsnap must not open: see the module's docstring."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise DatabaseError(
            f"{path}: is a symbolic link; memsnap never follows one to its database "
            "(give the file's own path)"
        )
    if stat.S_ISDIR(mode):
        raise DatabaseError(f"{path}: is a folder, not a database file")
    if not stat.S_ISREG(mode):
        what = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise DatabaseError(f"{path}: is {what}; a database must be a regular file")
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise DatabaseError(
            f"{path}: is owned by uid {st.st_uid}, not by you (uid {me}) or root; refused, "
            "since its owner can change it under you"
        )
    if stat.S_IMODE(mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise DatabaseError(
            f"{path}: others may write it (mode {stat.S_IMODE(mode):04o}); refused "
            "(if it is yours: chmod go-w it)"
        )


def _header(path: Path, st: os.stat_result) -> bytes:
    """The first 100 bytes, read through a descriptor that is the very file checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read the database: {exc.strerror}") from None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise DatabaseError(f"{path}: changed while memsnap looked at it; refused")
        return os.pread(fd, _HEADER, 0)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read the database: {exc.strerror}") from None
    finally:
        os.close(fd)


def _create(path: Path) -> None:
    """A new empty database file, 0600, in folders made 0700 (umask or not)."""
    missing = []
    folder = path.parent
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    try:
        for made in reversed(missing):
            try:
                os.mkdir(made, 0o700)
            except FileExistsError:
                continue  # made meanwhile by someone else: judged by its file's checks
            os.chmod(made, 0o700)  # mkdir's mode is narrowed by the umask, never widened
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        return  # a name appeared meanwhile: the caller judges it as an existing file
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot create the database: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
