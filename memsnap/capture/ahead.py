"""Reading one process while the rest of memsnap loads: `memsnap record PID`.

A one-shot record spends its first tenth of a second or more importing the database
layer (SQLAlchemy) and opening the database, all of it on one core holding the
interpreter lock, and only then reads the process, when the kernel's writing of a big
smaps takes about as long again. `ReadAhead` reads on a second thread meanwhile: first
the cheap signal (`Proc.quick`, which also says who the process is), then the whole map
(`Proc.capture`), each under the same integrity rules as a read on the main thread.
Recording then takes what it needs (`record_pid`): the signal for a process recorded
before (and the whole map too when the signal says it changed), the whole map for one
never recorded. For an unchanged process the whole map was read on the second core for
nothing.

Only where it pays (`worth_it`): the map must be read without the interpreter lock (the
C extension's `read_all`; a Python read loop would wait for the lock after each of its
thousands of calls while the other thread imports), and this process must be allowed a
second CPU. MEMSNAP_AHEAD=0 turns it off (to compare, or to rule it out).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone

from memsnap.capture import procfs
from memsnap.capture.procfs import Capture, Proc, ProcessInfo, Quick


def worth_it() -> bool:
    """Whether a read ahead can run beside the import (see the module's docstring)."""
    if os.environ.get("MEMSNAP_AHEAD", "1") == "0" or procfs.READ_ALL is None:
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except OSError:
        return False


class ReadAhead:
    """One process read on a second thread, started at once: its quick signal, its whole
    map, and the signal again (`settled`). `quick` and `capture` wait for their read;
    either is None when it failed: the main thread then reads the process itself, and
    reports what fails as it always does."""

    def __init__(self, proc: Proc, pid: int, smaps: bool = True) -> None:
        self.proc = proc
        self.pid = pid
        self.smaps = smaps
        self._quick: Quick | None = None
        self._capture: Capture | None = None
        self._settled = False
        self._taken_at: datetime | None = None
        # Each read is handed over as soon as it is done: a process recorded before need
        # not wait for its smaps, nor a new one for the signal read after it.
        self._quick_read = threading.Event()
        self._capture_read = threading.Event()
        # A daemon: a command that fails before it needs the read does not wait for it.
        self._thread = threading.Thread(target=self._read, name="memsnap-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        taken_at = datetime.now(timezone.utc)
        try:
            try:
                quick = self.proc.quick(self.pid, smaps=self.smaps)
                self._taken_at, self._quick = taken_at, quick
            finally:
                self._quick_read.set()
            try:
                self._capture = self.proc.capture(self.pid, smaps=self.smaps, info=quick.info)
            finally:
                self._capture_read.set()
            # Read right after the map, as `record_pid` does on the main thread: the same
            # signal before and after means the map read between them is the one it
            # describes (a check made later could miss a change and its undoing between).
            again = self.proc.quick(self.pid, smaps=self.smaps, info=quick.info)
            self._settled = again.value == quick.value
        except Exception:  # whatever it is, the main thread meets it too
            pass  # and reads again, and says why it fails, as without a read ahead

    @property
    def info(self) -> ProcessInfo | None:
        """Who the process was when read (its stat read before its maps)."""
        quick = self.quick
        return None if quick is None else quick.info

    @property
    def taken_at(self) -> datetime | None:
        """When the reads began: the time of a snapshot made from them."""
        self._quick_read.wait()
        return self._taken_at

    @property
    def quick(self) -> Quick | None:
        self._quick_read.wait()
        return self._quick

    @property
    def capture(self) -> Capture | None:
        self._capture_read.wait()
        return self._capture

    @property
    def settled(self) -> bool:
        """Whether the signal read right after the map equals the one read before it:
        only then may the signal be stored with a snapshot of that map."""
        self._thread.join()
        return self._settled
