"""`memsnap record`: snapshots of live processes, or of a saved maps/smaps text."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from memsnap.cli.common import database, echo
from memsnap.errors import MemsnapError, MemsnapInterrupted, UsageError
from memsnap.units import human
from memsnap.watch import MAX_INTERVAL_S

if TYPE_CHECKING:
    from memsnap.procfs import Proc
    from memsnap.store.database import Database

# A saved text larger than this is refused before it is read whole: 60,000 mappings of
# smaps are about 70 MiB, so this leaves room while keeping /dev/zero from eating memory.
MAX_IMPORT_BYTES = 512 << 20


def _summary_line(
    snapshot_id: int, pid: int, command: str, regions: int, size: int, rss: int | None
) -> str:
    return (
        f"snapshot {snapshot_id}: pid {pid} ({command}), {regions} regions, "
        f"{human(size)} virtual, {human(rss)} rss"
    )


def read_import(source: str) -> str:
    """The text of `--from-file` (`-` is standard input), refusing huge or endless input."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_IMPORT_BYTES + 1)
        else:
            with open(source, "rb") as f:
                data = f.read(MAX_IMPORT_BYTES + 1)
    except FileNotFoundError:
        raise MemsnapError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise MemsnapError(f"{source}: is a folder, not a maps text") from None
    except OSError as exc:
        raise MemsnapError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_IMPORT_BYTES:
        raise MemsnapError(
            f"{source}: larger than {human(MAX_IMPORT_BYTES)}: not a maps text memsnap will import"
        )
    if b"\0" in data:
        raise MemsnapError(f"{source}: holds NUL bytes: not a maps or smaps text")
    return data.decode("utf-8", "surrogateescape")


def check_watch_options(every: float | None, count: int | None) -> None:
    if every is not None and not 0 < every <= MAX_INTERVAL_S:
        raise UsageError(f"--every takes seconds above 0 and at most {MAX_INTERVAL_S} (a week)")
    if count is not None:
        if every is None:
            raise UsageError("--count goes with --every")
        if not 1 <= count <= 10**9:
            raise UsageError("--count takes a whole number from 1 to 1000000000")


def run_watch(
    db: Database,
    proc: Proc,
    pids: list[int],
    every: float,
    count: int | None,
    *,
    smaps: bool,
    label: str | None,
) -> None:
    """The watch loop with its output: a line per snapshot on stdout, and on a terminal
    a status line on stderr that keeps itself up to date."""
    from memsnap.record import Recorded, record_pid
    from memsnap.watch import WatchState, watch

    status = Status(enabled=sys.stderr.isatty())

    def on_snapshot(done: Recorded, state: WatchState) -> None:
        status.clear()
        t = done.totals
        echo(_summary_line(done.snapshot_id, done.pid, done.command, t.regions, t.size, t.rss))

    def on_gone(pid: int, why: str, state: WatchState) -> None:
        status.clear()
        typer.echo(f"memsnap: {why}; stopped watching it ({state.taken} snapshots kept)", err=True)

    def on_wait(left: float, state: WatchState) -> None:
        status.show(
            f"watching {len(pids) - len(state.stopped)} process(es): {state.taken} "
            f"snapshots, next in {left:.0f}s (Ctrl-C stops)"
        )

    state = WatchState()
    try:
        state = watch(
            pids,
            every,
            count,
            lambda pid: record_pid(db, proc, pid, smaps=smaps, label=label),
            on_snapshot,
            on_gone,
            on_wait,
        )
    except KeyboardInterrupt:
        status.clear()
        raise MemsnapInterrupted("interrupted: every finished snapshot is kept") from None
    status.clear()
    if state.taken == 0 and state.stopped:
        raise MemsnapError(next(iter(state.stopped.values())))


class Status:
    """One line on a terminal's stderr, rewritten in place."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
            self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


def record(
    ctx: typer.Context,
    pids: list[int] = typer.Argument(
        None, metavar="[PID]...", show_default=False, help="Processes to record."
    ),
    label: str | None = typer.Option(None, "--label", help="A note kept with each snapshot."),
    no_smaps: bool = typer.Option(
        False, "--no-smaps", help="Read maps only: no RSS/PSS/swap, faster."
    ),
    from_file: str | None = typer.Option(
        None,
        "--from-file",
        metavar="FILE",
        help="Import a saved maps or smaps text ('-' reads standard input).",
    ),
    pid_for_file: int | None = typer.Option(
        None, "--pid", help="With --from-file: the pid it belongs to."
    ),
    every: float | None = typer.Option(
        None, "--every", metavar="SECONDS", help="Watch: a snapshot every SECONDS."
    ),
    count: int | None = typer.Option(
        None, "--count", metavar="N", help="With --every: stop after N snapshots of each."
    ),
) -> None:
    """Take a snapshot of each process, or import a saved maps/smaps text."""
    from memsnap.procfs import Proc
    from memsnap.record import record_pid, record_text

    check_watch_options(every, count)
    if from_file is not None:
        if every is not None:
            raise UsageError("--every watches live processes; it does not go with --from-file")
        if pids:
            raise UsageError("give either PIDs or --from-file, not both")
        if pid_for_file is None:
            raise UsageError("--from-file needs --pid PID: the process the text belongs to")
        text = read_import(from_file)
        with database(ctx) as db:
            done = record_text(db, text, pid=pid_for_file, label=label)
        t = done.totals
        echo(_summary_line(done.snapshot_id, done.pid, done.command, t.regions, t.size, t.rss))
        return
    if pid_for_file is not None:
        raise UsageError("--pid goes with --from-file; to record live processes give PIDs")
    if not pids:
        raise UsageError("give at least one PID (or --from-file FILE --pid PID)")
    proc = Proc()
    if every is not None:
        with database(ctx) as db:
            run_watch(db, proc, pids, every, count, smaps=not no_smaps, label=label)
        return
    failures = 0
    with database(ctx) as db:
        for pid in pids:
            try:
                done = record_pid(db, proc, pid, smaps=not no_smaps, label=label)
            except MemsnapError as exc:
                if len(pids) == 1:
                    raise
                typer.echo(f"memsnap: {exc}", err=True)
                failures += 1
                continue
            t = done.totals
            echo(_summary_line(done.snapshot_id, done.pid, done.command, t.regions, t.size, t.rss))
    if failures:
        raise typer.Exit(1)
