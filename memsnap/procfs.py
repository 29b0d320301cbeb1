"""Everything memsnap reads from /proc, and nothing else does.

Each file is read to its end in one go. OS errors become `ProcessError`s that name the
pid and say what to do (one place: `_translate`), so callers never see an errno.

The proc root is a parameter (default `/proc`) so tests and containers can point it
elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from memsnap.errors import KernelThread, ProcessDenied, ProcessError, ProcessGone
from memsnap.model import ProcessIdentity

DEFAULT_PROC = "/proc"
_DELETED = " (deleted)"


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Who a process is: identity, names and the machine facts a snapshot carries."""

    identity: ProcessIdentity
    command: str
    cmdline: tuple[str, ...]
    exe: str | None
    page_size: int
    kernel: str


class ThreadPointers(NamedTuple):
    """Stack pointers of a process's threads (the main one aside), and how many threads
    did not tell theirs."""

    known: tuple[int, ...]
    unknown: int


class Digest:
    """The hash of a capture and of everything classifying it depends on: equal digests
    mean equal snapshots.

    A large text is hashed on a second thread while the first parses it: hashlib lets go
    of the interpreter lock for big buffers, so on a second core the 40 ms that 60,000
    mappings take cost nothing. `value()` waits for it.
    """

    _THREAD_FROM = 1 << 20  # bytes; below this a thread costs more than it saves

    def __init__(self, *parts: bytes) -> None:
        self._value: str | None = None
        self._thread: threading.Thread | None = None
        if sum(map(len, parts)) < self._THREAD_FROM:
            self._hash(parts)
        else:
            self._thread = threading.Thread(target=self._hash, args=(parts,), daemon=True)
            self._thread.start()

    def _hash(self, parts: tuple[bytes, ...]) -> None:
        digest = hashlib.blake2b(digest_size=20)
        for part in parts:
            digest.update(part)
        self._value = digest.hexdigest()

    def value(self) -> str:
        if self._thread is not None:
            self._thread.join()
        assert self._value is not None
        return self._value


@dataclass(frozen=True, slots=True)
class Capture:
    """The raw text of one read of a process's map, with what classifying needs."""

    info: ProcessInfo
    raw: bytes  # the maps or smaps text as the kernel wrote it
    has_smaps: bool
    threads: ThreadPointers
    digest: Digest


def read_file(path: str | Path) -> str:
    """One `read()` of a whole /proc file, decoded without ever failing on odd bytes."""
    return read_bytes(path).decode("utf-8", "surrogateescape")


def read_bytes(path: str | Path) -> bytes:
    """A whole /proc file, read to its end into one growing buffer.

    The kernel writes a maps or smaps text as it is read, a page or so per `read()`
    whatever the size asked for (60,000 mappings of smaps take 12,000 calls); asking for
    a large buffer each time only costs an allocation per call (0.10 s against 0.07 s).
    """
    with open(path, "rb", buffering=0) as f:
        return f.readall()


@contextlib.contextmanager
def _translate(pid: int) -> Iterator[None]:
    try:
        yield
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"pid {pid}: no such process") from None
    except PermissionError:
        raise ProcessDenied(
            f"pid {pid}: permission denied (reading another user's process needs root "
            "or ptrace rights)"
        ) from None
    except OSError as exc:
        # ESRCH shows up as a plain OSError when the process dies mid-read.
        if exc.errno == 3:
            raise ProcessGone(f"pid {pid}: no such process") from None
        raise ProcessError(f"pid {pid}: cannot read: {exc.strerror or exc}") from None


class Proc:
    """Reads one proc root; every method takes the pid it is about."""

    def __init__(self, root: str = DEFAULT_PROC) -> None:
        self.root = root

    def file(self, pid: int, name: str) -> str:
        """A file of a process, as a plain string: `record --all` builds a dozen of these
        for every process, and a `Path` costs several times more."""
        return f"{self.root}/{pid}/{name}"

    @cached_property
    def boot_id(self) -> str | None:
        """This boot's id: read once, it does not change while memsnap runs."""
        try:
            return read_file(f"{self.root}/sys/kernel/random/boot_id").strip() or None
        except OSError:
            return None

    @cached_property
    def host(self) -> str:
        return socket.gethostname()

    def _stat(self, pid: int) -> list[str]:
        """The fields of /proc/PID/stat from field 3 (state) on: the command name before
        them may hold spaces and parentheses, so they are counted after its last ')'."""
        with _translate(pid):
            stat = read_file(self.file(pid, "stat"))
        return stat.rsplit(")", 1)[-1].split()

    def start_ticks(self, pid: int) -> int:
        """Field 22 of stat: the start time in clock ticks since boot."""
        return int(self._stat(pid)[19])

    def state(self, pid: int) -> str:
        return self._stat(pid)[0]

    def exe(self, pid: int) -> str | None:
        """The program's path, without the ` (deleted)` the kernel appends."""
        try:
            target = os.readlink(self.file(pid, "exe"))
        except OSError:
            return None
        return target[: -len(_DELETED)] if target.endswith(_DELETED) else target

    def info(self, pid: int) -> ProcessInfo:
        with _translate(pid):
            comm = read_file(self.file(pid, "comm")).rstrip("\n")
            raw_cmdline = read_file(self.file(pid, "cmdline"))
        cmdline = tuple(raw_cmdline.split("\0")[:-1]) if raw_cmdline else ()
        identity = ProcessIdentity(
            host=self.host,
            boot_id=self.boot_id,
            pid=pid,
            start_ticks=self.start_ticks(pid),
        )
        return ProcessInfo(
            identity=identity,
            command=comm,
            cmdline=cmdline,
            exe=self.exe(pid),
            page_size=os.sysconf("SC_PAGE_SIZE"),
            kernel=os.uname().release,
        )

    def thread_stack_pointers(self, pid: int) -> ThreadPointers:
        """The stack pointer of each thread but the main one, where the kernel tells it.

        `/proc/PID/task/TID/syscall` ends with `sp pc` for a thread blocked in a system
        call; a running thread says `running`, and other users' threads are unreadable:
        those are counted as unknown (the classifier then also uses the guard-page rule).
        """
        pointers = []
        unknown = 0
        try:
            tids = os.listdir(self.file(pid, "task"))
        except OSError:
            return ThreadPointers((), 1)
        for tid in tids:
            if tid == str(pid):
                continue
            try:
                fields = read_file(self.file(pid, f"task/{tid}/syscall")).split()
                pointers.append(int(fields[-2], 16))
            except (OSError, ValueError, IndexError):
                unknown += 1
        return ThreadPointers(tuple(sorted(pointers)), unknown)

    def capture(self, pid: int, smaps: bool = True) -> Capture:
        """Read one consistent picture of a process's map, or raise `ProcessError`.

        The start time is read before and after the map: if it changed, the pid was
        reused in between and the text belongs to someone else.
        """
        info = self.info(pid)
        with _translate(pid):
            raw = read_bytes(self.file(pid, "smaps" if smaps else "maps"))
        if not raw:
            if self.state(pid) == "Z":
                raise ProcessGone(f"pid {pid}: zombie process: its memory is already gone")
            raise KernelThread(f"pid {pid}: kernel thread: no user address space")
        threads = self.thread_stack_pointers(pid)
        if self.start_ticks(pid) != info.identity.start_ticks:
            raise ProcessGone(f"pid {pid}: the process exited and its pid was reused")
        return Capture(
            info=info,
            raw=raw,
            has_smaps=smaps,
            threads=threads,
            digest=Digest(raw, repr((smaps, info.exe, threads, info.page_size)).encode()),
        )

    def pids(self) -> list[int]:
        """Every pid in the proc root, ascending."""
        return sorted(int(name) for name in os.listdir(self.root) if name.isdigit())

    def map_file(self, pid: int, start: int, end: int) -> Path:
        """The kernel's handle on a mapped file, valid even when the file was deleted."""
        return Path(self.file(pid, f"map_files/{start:x}-{end:x}"))
