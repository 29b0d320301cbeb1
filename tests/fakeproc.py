"""A fake /proc tree under a temporary folder, for what no live process does on cue.

As psutil's tests do, the files a process has in /proc (stat, status, comm, cmdline,
exe, maps, smaps, task/TID/syscall) are written under a folder, and `FakeProc` (memsnap's
`Proc` pointed at that folder) reads them. Between two reads of one capture, a test
changes them: `FakeProc.on_read(name, change)` runs `change` just before the file `name`
is next opened, so a pid can be reused, a process exit or exec, exactly between the read
of the map and the stat taken after it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memsnap.capture.procfs import Proc

MAPS = (
    "55d000400000-55d000408000 r-xp 00001000 fd:02 31337      /usr/bin/prog\n"
    "55d000408000-55d000409000 rw-p 00008000 fd:02 31337      /usr/bin/prog\n"
    "55d001000000-55d001021000 rw-p 00000000 00:00 0          [heap]\n"
    "7ffc3a000000-7ffc3a021000 rw-p 00000000 00:00 0          [stack]\n"
)


def smaps_of(maps: str) -> str:
    """An smaps text for a maps text: each block with sizes of its own."""
    blocks = []
    for i, line in enumerate(maps.splitlines()):
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        size = (end - start) // 1024
        blocks.append(
            f"{line}\nSize: {size:>8} kB\nRss: {4 * (i + 1):>8} kB\nPss: {2 * (i + 1):>8} kB\n"
            f"Private_Clean: {i:>8} kB\nPrivate_Dirty: {i + 1:>8} kB\nSwap: {0:>8} kB\n"
            "VmFlags: rd wr mr mw me ac\n"
        )
    return "".join(blocks)


@dataclass(frozen=True)
class FakeProcess:
    """One process's files, as the kernel would write them."""

    pid: int
    comm: str = "prog"
    cmdline: tuple[str, ...] = ("/usr/bin/prog", "--serve")
    exe: str = "/usr/bin/prog"
    maps: str = MAPS
    smaps: str | None = None  # None: made from `maps`
    state: str = "S"
    flags: int = 0x400000  # PF_FORKNOEXEC: a plain running process
    start_ticks: int = 123456
    vsize: int = 4 << 20
    space: tuple[int, int, int] = (0x55D000400000, 0x55D000408000, 0x7FFC3A020000)
    threads: dict[int, str] = field(default_factory=dict)  # tid -> its syscall line

    def stat_line(self) -> str:
        """/proc/PID/stat: 52 fields; memsnap reads state, flags, starttime, vsize and
        the code and stack addresses."""
        after = ["0"] * 50
        after[0] = self.state
        after[6] = str(self.flags)
        after[19] = str(self.start_ticks)
        after[20] = str(self.vsize)
        after[23], after[24], after[25] = (str(x) for x in self.space)
        return f"{self.pid} ({self.comm}) {' '.join(after)}\n"


class FakeProcTree:
    """A folder laid out as /proc, holding the processes a test adds."""

    def __init__(self, root: Path, boot_id: str = "0c5c1ef4-0000-4000-8000-000000000001") -> None:
        self.root = root
        random = root / "sys" / "kernel" / "random"
        random.mkdir(parents=True)
        (random / "boot_id").write_text(boot_id + "\n")
        self.processes: dict[int, FakeProcess] = {}

    def add(self, process: FakeProcess) -> FakeProcess:
        """Write every file of `process` (replacing what its pid had)."""
        folder = self.root / str(process.pid)
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "task" / str(process.pid)).mkdir(parents=True)
        (folder / "stat").write_text(process.stat_line())
        (folder / "status").write_text(f"Name:\t{process.comm}\nState:\t{process.state}\n")
        (folder / "comm").write_text(process.comm + "\n")
        (folder / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in process.cmdline))
        (folder / "exe").symlink_to(process.exe)
        (folder / "maps").write_text(process.maps)
        smaps = process.smaps if process.smaps is not None else smaps_of(process.maps)
        (folder / "smaps").write_text(smaps)
        for tid, syscall in process.threads.items():
            (folder / "task" / str(tid)).mkdir()
            (folder / "task" / str(tid) / "syscall").write_text(syscall)
        self.processes[process.pid] = process
        return process

    def change(self, pid: int, **fields: Any) -> FakeProcess:
        """Rewrite a process with some of its fields changed."""
        return self.add(replace(self.processes[pid], **fields))

    def remove(self, pid: int) -> None:
        """The process is gone: reaped, its folder with it."""
        shutil.rmtree(self.root / str(pid))
        del self.processes[pid]


class FakeProc(Proc):
    """memsnap's `Proc` over a fake tree, with changes to make just before a read."""

    def __init__(self, tree: FakeProcTree) -> None:
        super().__init__(str(tree.root))
        self.tree = tree
        self._before: dict[str, list[Callable[[], object]]] = {}
        self.opened: list[str] = []

    def on_read(self, name: str, change: Callable[[], object]) -> None:
        """Run `change` once, just before the file `name` (stat, smaps, task, ...) is
        next opened."""
        self._before.setdefault(name, []).append(change)

    def file(self, pid: int, name: str) -> str:
        # Every read of a process's file asks for its path here first.
        self.opened.append(name)
        for change in self._before.pop(name, []):
            change()
        return super().file(pid, name)
