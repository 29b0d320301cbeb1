"""Recording many processes in one go: `record PID ...`, `record --all`, `--name`.

Each process is its own transaction. Processes that cannot be recorded are skipped and
counted by reason: kernel threads (no user memory), processes that exit or deny access
while being read. A `Sweep` is reused across the rounds of a watch so that ELF headers
are read once per object, not once per process and round.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from memsnap.capture.ahead import ReadAhead
from memsnap.capture.procfs import Proc, ProcessInfo, kernel_thread
from memsnap.capture.record import Recorded, record_pid
from memsnap.errors import (
    KernelThread,
    ProcessChanged,
    ProcessDenied,
    ProcessError,
    ProcessGone,
)
from memsnap.match import name_matches
from memsnap.store.database import Database
from memsnap.store.writer import Writer
from memsnap.units import plural

SKIP_REASONS = {
    KernelThread: "kernel threads",
    ProcessGone: "exited while read",
    ProcessDenied: "permission denied",
    ProcessChanged: "ran a new program while read",
}


@dataclass
class RoundResult:
    recorded: list[Recorded] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: dict[int, str] = field(default_factory=dict)  # pid -> why it was skipped
    gone: set[int] = field(default_factory=set)  # pids that exited while being read

    def summary(self) -> str:
        parts = [f"recorded {plural(len(self.recorded), 'process', 'processes')}"]
        parts += [f"skipped {n} ({why})" for why, n in sorted(self.skipped.items())]
        return ", ".join(parts)


@dataclass
class Sweep:
    db: Database
    proc: Proc
    smaps: bool = True
    label: str | None = None
    name: re.Pattern[str] | None = None
    # The time stored with each snapshot (None: now); a test drives it to simulate weeks.
    clock: Callable[[], datetime] | None = None
    # A process already being read on a second thread (`record PID`): taken by the run
    # that records it.
    ahead: ReadAhead | None = None

    def all_pids(self) -> list[int]:
        """Every process but memsnap itself (its own layout moves while it reads it)."""
        me = os.getpid()
        return [pid for pid in self.proc.pids() if pid != me]

    def matches(self, pid: int) -> ProcessInfo | None:
        """Who the process is, or None when `--name` rules it out. The capture starts
        from this `ProcessInfo`, so a process is read once, matched or not.

        A kernel thread (most of the pids of a quiet machine) is told by its stat's
        flags and skipped after that one read, as its empty map would have it skipped
        later; with `--name` only once the name matched, so that the summary counts the
        same processes."""
        stat = self.proc.stat(pid)
        if self.name is None and stat.kernel_thread:
            raise kernel_thread(pid)
        info = self.proc.info(pid, stat)
        if self.name is not None and not name_matches(
            self.name, info.command, info.exe, info.cmdline
        ):
            return None
        if stat.kernel_thread:
            raise kernel_thread(pid)
        return info

    def run(
        self,
        pids: Iterable[int],
        on_recorded: Callable[[Recorded], None] = lambda _r: None,
        on_progress: Callable[[int, int], None] = lambda _done, _total: None,
    ) -> RoundResult:
        """Record each pid; those that cannot be are counted by reason, with messages."""
        result = RoundResult()
        todo = list(pids)
        # Who was recorded before, asked once per round: a process never seen needs no
        # look for an unchanged copy (a transaction each, most of the cost of a small one).
        seen = Writer(self.db).recorded_processes(self.proc.host, self.proc.boot_id, todo)
        for done, pid in enumerate(todo, start=1):
            on_progress(done, len(todo))
            ahead = self.ahead if self.ahead is not None and self.ahead.pid == pid else None
            if ahead is not None:
                self.ahead = None  # read once, for this one record
            try:
                info = ahead.info if ahead is not None and self.name is None else None
                if info is None:
                    ahead = None
                    info = self.matches(pid)
                if info is None:
                    continue
                recorded = record_pid(
                    self.db,
                    self.proc,
                    pid,
                    smaps=self.smaps,
                    label=self.label,
                    recorded=seen,
                    info=info,
                    taken_at=None if self.clock is None else self.clock(),
                    ahead=ahead,
                )
            except ProcessError as exc:
                reason = next(
                    (why for cls, why in SKIP_REASONS.items() if isinstance(exc, cls)), "unreadable"
                )
                result.skipped[reason] += 1
                result.errors[pid] = str(exc)
                if isinstance(exc, ProcessGone):
                    result.gone.add(pid)
                continue
            result.recorded.append(recorded)
            on_recorded(recorded)
        return result
