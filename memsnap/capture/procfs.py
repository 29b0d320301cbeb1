"""Everything memsnap reads from /proc, and nothing else does.

Each file is read to its end in one go. OS errors become `ProcessError`s that name the
pid and say what to do (one place: `_translate`), so callers never see an errno.

The proc root is a parameter (default `/proc`) so tests and containers can point it
elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from io import FileIO
from pathlib import Path
from typing import NamedTuple

from memsnap import native
from memsnap.errors import (
    KernelThread,
    ProcessChanged,
    ProcessDenied,
    ProcessError,
    ProcessGone,
)
from memsnap.model import ProcessIdentity

DEFAULT_PROC = "/proc"
_DELETED = " (deleted)"


# Task flags (include/linux/sched.h), as /proc/PID/stat's field 9 shows them.
PF_EXITING = 0x4
PF_KTHREAD = 0x200000


@dataclass(frozen=True, slots=True)
class Stat:
    """What /proc/PID/stat says about whether a process and its address space live.

    A read of smaps or maps walks the address space a page of text at a time and stops
    early, returning a short text with no error, once the address space has been torn
    down (the kernel's `m_start` finds no live `mm`). That happens only after every
    thread has begun to exit (`do_exit` sets PF_EXITING before `exit_mm` lets go of the
    address space) or after an exec replaced it. Both leave a trace here that stays
    until the process is reaped (and then the pid is gone or names another process):
    the thread-group leader's PF_EXITING flag, a zombie or dead state, a zero `vsize`
    (no `mm` any more), or new code and stack addresses (a new program). So a read is
    whole when the stat taken after it shows the same process, alive, not exiting, with
    the same address space as before it.
    """

    state: str
    flags: int
    start_ticks: int
    vsize: int
    # start_code, end_code, start_stack: fixed for the life of an address space, new
    # after an exec (the kernel shows them to whoever may read the maps).
    space: tuple[int, int, int]

    @staticmethod
    def parse(text: str) -> Stat:
        """Field 3 (state) on, counted after the command name's last ')' (the name may
        hold spaces and parentheses)."""
        f = text.rsplit(")", 1)[-1].split()
        return Stat(
            state=f[0],
            flags=int(f[6]),
            start_ticks=int(f[19]),
            vsize=int(f[20]),
            space=(int(f[23]), int(f[24]), int(f[25])),
        )

    @property
    def kernel_thread(self) -> bool:
        """A kernel thread (PF_KTHREAD): it has no user address space, and never will."""
        return bool(self.flags & PF_KTHREAD)

    @property
    def exiting(self) -> bool:
        """The process is exiting or dead: its address space is, or is about to be, gone."""
        return self.state in ("Z", "X", "x") or bool(self.flags & PF_EXITING)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Who a process is: identity, names and the machine facts a snapshot carries.

    `stat` is the stat read with them: a capture compares it with one read after the
    map (see `Stat`)."""

    identity: ProcessIdentity
    command: str
    cmdline: tuple[str, ...]
    exe: str | None
    page_size: int
    kernel: str
    stat: Stat | None = None


class ThreadPointers(NamedTuple):
    """Stack pointers of a process's threads (the main one aside), and how many threads
    did not tell theirs."""

    known: tuple[int, ...]
    unknown: int


class Digest:
    """The hash of a capture and of everything classifying it depends on: equal digests
    mean equal snapshots.

    A large text is hashed on a second thread while the first parses it: hashlib lets go
    of the interpreter lock for big buffers, so on a second core hashing costs the
    parse nothing. `value()` waits for it.
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

    @classmethod
    def known(cls, value: str) -> Digest:
        """A digest already computed (a text hashed a piece at a time: `MapReader`)."""
        digest = cls()
        digest._value = value
        return digest

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


# The quick signal's hash is stored after the full digest in one 64-character column:
# 40 + 1 + 22 characters.
QUICK_DIGEST_SIZE = 11


@dataclass(frozen=True, slots=True)
class Quick:
    """Who a process is, its maps text and the hex hash of its cheap signal
    (`Proc.quick`)."""

    info: ProcessInfo
    maps: bytes
    value: str


def kernel_thread(pid: int) -> KernelThread:
    return KernelThread(f"pid {pid}: kernel thread: no user address space")


def split_cmdline(raw: str) -> tuple[str, ...]:
    """The arguments of /proc/PID/cmdline. A process that rewrote its title in place
    (PostgreSQL's `postgres: 15/main: background writer`) leaves the rest of its
    argument area as NUL bytes: trailing empty arguments are that padding, and are
    dropped as `ps` drops them."""
    args = raw.split("\0")
    while args and not args[-1]:
        args.pop()
    return tuple(args)


def read_file(path: str | Path) -> str:
    """One `read()` of a whole /proc file, decoded without ever failing on odd bytes."""
    return read_bytes(path).decode("utf-8", "surrogateescape")


def read_bytes(path: str | Path) -> bytes:
    """A whole /proc file, read to its end into one growing buffer.

    The kernel writes a maps or smaps text as it is read, a page or so per `read()`
    whatever the size asked for (60,000 mappings of smaps take 12,000 calls); asking for
    a large buffer each time only costs an allocation per call (README, Performance).
    With the C extension the calls are made without the interpreter lock (`READ_ALL`):
    a Python loop takes the lock back after every call, and while another thread runs
    Python each of those waits for it (`memsnap.capture.ahead` reads on a second thread).
    """
    with open(path, "rb", buffering=0) as f:
        return f.readall() if READ_ALL is None else READ_ALL(f.fileno())


_EXTENSION = native.extension()
# The C extension's whole-file read, when memsnap uses its extension (`memsnap.native`).
READ_ALL: Callable[[int], bytes] | None = None if _EXTENSION is None else _EXTENSION.read_all


CAP_SYS_PTRACE = 19
_WHOLE_ID_RANGE = ("0", "0", "4294967295")  # uid_map of the initial user namespace


def denied_message(pid: int, euid: int, cap_eff: int | None, uid_map: str | None) -> str:
    """Why reading a process was refused, as far as memsnap can tell.

    A map is readable to its owner, or to whoever holds CAP_SYS_PTRACE over the
    process's user namespace (the kernel's PTRACE_MODE_READ check). Not being root is the
    usual cause; as root the cause is elsewhere: a capability dropped (a container), a
    user namespace whose root is nobody outside it, or a security module (SELinux,
    AppArmor). Yama's ptrace_scope is not among them: it restricts attaching, not reading
    /proc/PID/maps."""
    if euid != 0:
        return (
            f"pid {pid}: permission denied (reading another user's process needs root "
            "or ptrace rights)"
        )
    if cap_eff is not None and not cap_eff >> CAP_SYS_PTRACE & 1:
        return (
            f"pid {pid}: permission denied: memsnap runs as root but without the "
            f"CAP_SYS_PTRACE capability (CapEff {cap_eff:016x}), as in a container"
        )
    if uid_map is not None and tuple(uid_map.split()) != _WHOLE_ID_RANGE:
        shown = " ".join(uid_map.split()[:3])
        return (
            f"pid {pid}: permission denied: memsnap runs as root of a user namespace "
            f"(uid_map {shown}), which has no rights over processes outside it"
        )
    return (
        f"pid {pid}: permission denied although memsnap runs as root with CAP_SYS_PTRACE: "
        "a security module (SELinux, AppArmor) or a seccomp policy refuses it"
    )


def _own_rights() -> tuple[int, int | None, str | None]:
    """memsnap's effective uid, effective capabilities and uid_map (None: unreadable)."""
    euid = os.geteuid()
    if euid != 0:
        return euid, None, None
    cap_eff = uid_map = None
    with contextlib.suppress(OSError, ValueError):
        for line in read_file("/proc/self/status").splitlines():
            if line.startswith("CapEff:"):
                cap_eff = int(line.split()[1], 16)
    with contextlib.suppress(OSError):
        uid_map = read_file("/proc/self/uid_map")
    return euid, cap_eff, uid_map


@contextlib.contextmanager
def _translate(pid: int) -> Iterator[None]:
    try:
        yield
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"pid {pid}: no such process") from None
    except PermissionError:
        raise ProcessDenied(denied_message(pid, *_own_rights())) from None
    except OSError as exc:
        # ESRCH shows up as a plain OSError when the process dies mid-read.
        if exc.errno == errno.ESRCH:
            raise ProcessGone(f"pid {pid}: no such process") from None
        raise ProcessError(f"pid {pid}: cannot read: {exc.strerror or exc}") from None


class Proc:
    """Reads one proc root; every method takes the pid it is about."""

    def __init__(self, root: str = DEFAULT_PROC, host: str | None = None) -> None:
        self.root = root
        # The name snapshots are stored under: `record --host-id`, else the host name.
        self._host = host

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
        return self._host if self._host is not None else socket.gethostname()

    def stat(self, pid: int) -> Stat:
        with _translate(pid):
            text = read_file(self.file(pid, "stat"))
        try:
            return Stat.parse(text)
        except (IndexError, ValueError):
            raise ProcessError(f"pid {pid}: unexpected /proc/{pid}/stat") from None

    def start_ticks(self, pid: int) -> int:
        """Field 22 of stat: the start time in clock ticks since boot."""
        return self.stat(pid).start_ticks

    def state(self, pid: int) -> str:
        return self.stat(pid).state

    def exe(self, pid: int) -> str | None:
        """The program's path, without the ` (deleted)` the kernel appends."""
        try:
            target = os.readlink(self.file(pid, "exe"))
        except OSError:
            return None
        return target[: -len(_DELETED)] if target.endswith(_DELETED) else target

    @cached_property
    def _machine(self) -> tuple[int, str]:
        """The page size and kernel release: read once, they do not change while memsnap
        runs (a watch would otherwise ask for them for every process, every round)."""
        return os.sysconf("SC_PAGE_SIZE"), os.uname().release

    def info(self, pid: int, stat: Stat | None = None) -> ProcessInfo:
        """Who process `pid` is; `stat`: its stat, when just read (`Sweep` reads it first
        to pass over a kernel thread after one read)."""
        if stat is None:
            stat = self.stat(pid)
        with _translate(pid):
            comm = read_file(self.file(pid, "comm")).rstrip("\n")
            raw_cmdline = read_file(self.file(pid, "cmdline"))
        identity = ProcessIdentity(
            host=self.host,
            boot_id=self.boot_id,
            pid=pid,
            start_ticks=stat.start_ticks,
        )
        return ProcessInfo(
            identity=identity,
            command=comm,
            cmdline=split_cmdline(raw_cmdline),
            exe=self.exe(pid),
            page_size=self._machine[0],
            kernel=self._machine[1],
            stat=stat,
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

    def capture(self, pid: int, smaps: bool = True, info: ProcessInfo | None = None) -> Capture:
        """Read one whole picture of a process's map, or raise `ProcessError`.

        `info`, when given, was just read by `info(pid)` (`record --name` reads it to
        match the name). The process's stat is read before (with `info`) and after the
        map: the text is kept only if the same process (same start time) was alive, not
        exiting and had the same address space both times (see `Stat`): a process
        exiting mid-read leaves a short text that is otherwise well-formed.
        """
        if info is None or info.stat is None:
            info = self.info(pid)
        before = info.stat
        assert before is not None
        with _translate(pid):
            raw = read_bytes(self.file(pid, "smaps" if smaps else "maps"))
        threads = self.thread_stack_pointers(pid) if raw else ThreadPointers((), 0)
        self._whole(pid, before, bool(raw))
        return Capture(
            info=info,
            raw=raw,
            has_smaps=smaps,
            threads=threads,
            digest=Digest(raw, repr((smaps, info.exe, threads, info.page_size)).encode()),
        )

    def map_reader(
        self, pid: int, smaps: bool = True, info: ProcessInfo | None = None
    ) -> MapReader:
        """`capture`, a piece at a time: the map opened, to be read by `MapReader.read`
        and checked whole by `MapReader.capture` under the same rules."""
        if info is None or info.stat is None:
            info = self.info(pid)
        with _translate(pid):
            f = FileIO(self.file(pid, "smaps" if smaps else "maps"))
        return MapReader(self, pid, info, smaps, f)

    def _whole(self, pid: int, before: Stat, read: bool) -> None:
        """Raise unless the stat read now shows the process of `before`, alive, not
        exiting, with the same address space (see `Stat`); `read`: the map was not empty."""
        after = self.stat(pid)
        if after.start_ticks != before.start_ticks:
            raise ProcessGone(f"pid {pid}: the process exited and its pid was reused")
        if after.state in ("Z", "X", "x") and not read:
            raise ProcessGone(f"pid {pid}: zombie process: its memory is already gone")
        if after.exiting or before.exiting:
            raise ProcessGone(f"pid {pid}: the process exited while it was read")
        if not read:
            raise kernel_thread(pid)
        if after.vsize == 0 or after.space != before.space:
            raise ProcessChanged(f"pid {pid}: the process ran a new program while it was read")

    def quick(self, pid: int, smaps: bool = True, info: ProcessInfo | None = None) -> Quick:
        """The cheap signal of whether a process changed since a snapshot: a hash of its
        maps text, its smaps_rollup text (with smaps) and what classifying depends on,
        read under the same integrity rules as `capture`. maps is a fraction of smaps'
        size and the rollup is one block, so this costs a small part of a full read.

        Equal signals mean the same layout and the same totals; sizes could still have
        moved between regions in a way that keeps every total (see the README's
        Performance section for how often that was seen)."""
        if info is None or info.stat is None:
            info = self.info(pid)
        before = info.stat
        assert before is not None
        with _translate(pid):
            maps = read_bytes(self.file(pid, "maps"))
            rollup = read_bytes(self.file(pid, "smaps_rollup")) if smaps and maps else b""
        threads = self.thread_stack_pointers(pid) if maps else ThreadPointers((), 0)
        self._whole(pid, before, bool(maps))
        digest = hashlib.blake2b(digest_size=QUICK_DIGEST_SIZE)
        for part in (maps, b"\0", rollup, repr((smaps, info.exe, threads, info.page_size))):
            digest.update(part if isinstance(part, bytes) else part.encode())
        return Quick(info, maps, digest.hexdigest())

    def pids(self) -> list[int]:
        """Every pid in the proc root, ascending."""
        return sorted(int(name) for name in os.listdir(self.root) if name.isdigit())

    def deleted_for_real(self, pid: int, start: int, end: int, path: str, inode: int) -> bool:
        """Whether the ` (deleted)` ending a mapped file's name in maps is the kernel's
        mark (`path` is the name without it) or part of the file's own name.

        The kernel's handle on the mapping leads to the file itself: a link count of 0
        settles it (following it needs CAP_SYS_ADMIN, so it may be unreadable). Else the
        suffix is the file's own only if a file of the whole name, with that inode,
        exists where the process sees it (its root: containers have their own).
        """
        with contextlib.suppress(OSError):
            if os.stat(self.map_file(pid, start, end)).st_nlink == 0:
                return True
        try:
            whole = os.stat(self.file(pid, f"root{path}{_DELETED}"))
        except (OSError, ValueError):
            return True
        return whole.st_ino != inode

    def map_file(self, pid: int, start: int, end: int) -> Path:
        """The kernel's handle on a mapped file, valid even when the file was deleted."""
        return Path(self.file(pid, f"map_files/{start:x}-{end:x}"))


class MapReader:
    """One read of a process's maps or smaps, handed out a piece at a time (`Proc.map_reader`).

    The text is hashed as it is read, so that `capture` gives the digest `Proc.capture`
    would give for the whole text; the stat after the read and the threads' stack
    pointers are taken in `capture`, after the end was met, as `Proc.capture` takes
    them. Every piece of a text that turns out not to be whole (the process exited or
    ran a new program meanwhile) must be thrown away: `capture` raises then.
    """

    def __init__(self, proc: Proc, pid: int, info: ProcessInfo, smaps: bool, f: FileIO) -> None:
        self.proc, self.pid, self.info, self.smaps = proc, pid, info, smaps
        self._file = f
        self._hash = hashlib.blake2b(digest_size=20)
        self._size = 0

    def read(self, budget: int) -> bytes:
        """The next `budget` bytes of the text, fewer only at its end (b"": the end).

        The kernel hands out about a page per `read()` whatever is asked: each call is
        given the room left in one buffer, so no call allocates."""
        buffer = bytearray(budget)
        view = memoryview(buffer)
        pos = 0
        with _translate(self.pid):
            while pos < budget:
                n = self._file.readinto(view[pos:])
                if not n:
                    break
                pos += n
        view.release()
        if pos < budget:
            del buffer[pos:]
            self.close()
        piece = bytes(buffer)
        self._hash.update(piece)
        self._size += pos
        return piece

    def close(self) -> None:
        self._file.close()

    def capture(self, raw: bytes = b"") -> Capture:
        """After the end was read: the capture of the whole text (`raw`: the text
        itself, when the caller kept it whole; else b"" and the caller holds the
        pieces), or the `ProcessError` saying why the text is not whole."""
        self.close()
        info, smaps = self.info, self.smaps
        threads = self.proc.thread_stack_pointers(self.pid) if self._size else ThreadPointers((), 0)
        assert info.stat is not None
        self.proc._whole(self.pid, info.stat, bool(self._size))
        self._hash.update(repr((smaps, info.exe, threads, info.page_size)).encode())
        return Capture(
            info=info,
            raw=raw,
            has_smaps=smaps,
            threads=threads,
            digest=Digest.known(self._hash.hexdigest()),
        )
