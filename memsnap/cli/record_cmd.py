"""`memsnap record`: snapshots of live processes, once or as a watch, or of a saved
maps/smaps text. How an imported text is opened is `importing`'s; how a watch is
interrupted is `interrupts`'."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from memsnap.capture.watch import MAX_INTERVAL_S
from memsnap.capture.watch import every as every_
from memsnap.cli.common import database, echo
from memsnap.cli.importing import read_import
from memsnap.cli.interrupts import Terminated, raise_pending, watch_signals
from memsnap.cli.picking import KEEP, PID_MAX
from memsnap.errors import MemsnapInterrupted, UsageError
from memsnap.names import visible
from memsnap.units import human_once, plural

if TYPE_CHECKING:
    from datetime import datetime

    from memsnap.capture.record import Recorded
    from memsnap.capture.sweep import Sweep
    from memsnap.retention import Policy


def summary_line(done: Recorded) -> str:
    """The line `record` prints for each snapshot it stored."""
    t = done.totals
    return (
        f"snapshot {done.snapshot_id}: pid {done.pid} ({visible(done.command)}), "
        f"{t.regions} regions, "
        f"{human_once(t.size)} virtual, {human_once(t.rss)} rss"
    )


def check_watch_options(every: float | None, count: int | None) -> None:
    if every is not None and not 0 < every <= MAX_INTERVAL_S:
        raise UsageError(f"--every takes seconds above 0 and at most {MAX_INTERVAL_S} (a week)")
    if count is not None:
        if every is None:
            raise UsageError("--count goes with --every")
        if not 1 <= count <= 10**9:
            raise UsageError("--count takes a whole number from 1 to 1000000000")


class Status:
    """One line on a terminal's stderr, rewritten in place; nothing when not a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
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


def record_live(
    sweep: Sweep,
    pids: list[int] | None,
    every: float | None,
    count: int | None,
    policy: Policy | None = None,
) -> int:
    """Record the given pids (or every process when None), once or as a watch; with a
    `policy`, each round's processes are pruned by it as soon as they are recorded.

    Returns the exit code: 0, or 1 when an explicitly named process could not be
    recorded at all. Ctrl-C (and SIGTERM in a watch) raises `MemsnapInterrupted` after
    the finished snapshots are kept.
    """
    from collections import Counter

    status = Status()
    kept: Counter[int] = Counter()  # snapshots stored, per pid

    def printer(done: Recorded) -> None:
        # Counted as each is stored: Ctrl-C in the middle of a round keeps these.
        kept[done.pid] += 1
        status.clear()
        echo(summary_line(done))

    # A pid named twice is recorded once.
    watching = list(dict.fromkeys(pids)) if pids is not None else None
    failed = False

    def progress(done: int, total: int) -> None:
        raise_pending()
        if total > 1:
            status.show(f"recording {done}/{total} processes")

    def one_round(number: int) -> bool:
        nonlocal failed
        raise_pending()
        targets = watching if watching is not None else sweep.all_pids()
        result = sweep.run(targets, printer, progress)
        status.clear()
        if policy is not None and result.recorded:
            prune_round(sweep, policy, [r.snapshot_id for r in result.recorded])
        if watching is None:
            echo(f"memsnap: {result.summary()}", err=True)
            return True
        for pid, why in result.errors.items():
            watching.remove(pid)
            # A process seen before that exits ends its watch normally; one that never
            # was recorded gets the one-shot form's message (`no such process`).
            ended = pid in result.gone and kept[pid] > 0
            message = f"pid {pid} exited" if ended and every is not None else why
            if every is not None and kept[pid]:
                message += f"; stopped watching it ({plural(kept[pid], 'snapshot')} kept)"
            echo(f"memsnap: {message}", err=True)
            failed = failed or not ended
        return bool(watching)

    try:
        with watch_signals(every is not None):
            if every is None:
                one_round(1)
            else:
                every_(
                    every,
                    count,
                    one_round,
                    lambda left: status.show(
                        f"{plural(kept.total(), 'snapshot')} taken, "
                        f"next in {left:.0f}s (Ctrl-C stops)"
                    ),
                )
    except KeyboardInterrupt as exc:
        status.clear()
        terminated = isinstance(exc, Terminated)
        raise MemsnapInterrupted(
            f"{'terminated' if terminated else 'interrupted'}: "
            f"{plural(kept.total(), 'finished snapshot')} kept, none half-taken",
            exit_code=143 if terminated else 130,
        ) from None
    return 1 if failed else 0


def prune_round(sweep: Sweep, policy: Policy, snapshot_ids: list[int]) -> None:
    """Every round, per process recorded: the policy is read against that process's
    snapshot times only, so a round costs the same in its first hour and its fourth week."""
    from datetime import datetime, timezone

    from memsnap.store.prune import prune_recorded

    now = sweep.clock() if sweep.clock is not None else datetime.now(timezone.utc)
    prune_recorded(sweep.db, policy, snapshot_ids, now)


def record(
    ctx: typer.Context,
    pids: list[int] = typer.Argument(
        None, metavar="PID", show_default=False, help="Processes to record."
    ),
    all_: bool = typer.Option(False, "--all", help="Every process memsnap may read."),
    name: str | None = typer.Option(
        None,
        "--name",
        metavar="REGEX",
        help="Only processes whose command line, command or program matches (as pgrep -f); "
        "every one, when no PID is given.",
    ),
    label: str | None = typer.Option(
        None, "--label", metavar="TEXT", help="A note kept with each snapshot."
    ),
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
        None, "--pid", metavar="PID", help="With --from-file: the pid it belongs to."
    ),
    taken_at: str | None = typer.Option(
        None,
        "--taken-at",
        metavar="TIME",
        help="With --from-file: when the text was saved (default: now).",
    ),
    host_id: str | None = typer.Option(
        None,
        "--host-id",
        metavar="TEXT",
        help="The host name snapshots are stored under (default: this machine's host name; "
        "'(imported)' with --from-file).",
    ),
    every: float | None = typer.Option(
        None, "--every", metavar="SECONDS", help="Watch: a snapshot every SECONDS."
    ),
    count: int | None = typer.Option(
        None, "--count", metavar="N", help="With --every: stop after N rounds."
    ),
    keep_last: int = KEEP["last"],
    keep_within: str | None = KEEP["within"],
    keep_hourly: int = KEEP["hourly"],
    keep_daily: int = KEEP["daily"],
    keep_weekly: int = KEEP["weekly"],
) -> None:
    """Take a snapshot of each process, or import a saved maps/smaps text."""
    from memsnap.match import compile_name

    check_watch_options(every, count)
    from memsnap.retention import Policy, parse_duration

    rules = Policy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        within=parse_duration(keep_within) if keep_within is not None else None,
    )
    policy = None if rules.empty else rules
    if policy is not None and every is None:
        raise UsageError("the --keep options go with --every (to prune once: memsnap prune)")
    pattern = None if name is None else compile_name(name)
    if from_file is not None:
        if pids or all_ or every is not None or name is not None:
            raise UsageError("--from-file imports one text: no PIDs, --all, --name or --every")
        if pid_for_file is None:
            raise UsageError("--from-file needs --pid PID: the process the text belongs to")
        check_import_options(pid_for_file, host_id)
        from memsnap.timeparse import parse_time

        when = parse_time(taken_at) if taken_at is not None else None
        import_file(
            ctx, from_file, pid_for_file, label, taken_at=when, host=host_id, smaps=not no_smaps
        )
        return
    if pid_for_file is not None:
        raise UsageError("--pid goes with --from-file; to record live processes give PIDs")
    if taken_at is not None:
        raise UsageError("--taken-at goes with --from-file: a live snapshot is taken now")
    check_host_id(host_id)
    if all_ and pids:
        raise UsageError("give PIDs or --all, not both")
    if not all_ and not pids and name is None:
        raise UsageError(
            "give at least one PID, --all, --name REGEX, or --from-file FILE --pid PID"
        )

    from memsnap.capture import ahead
    from memsnap.capture.procfs import Proc

    proc = Proc(host=host_id)
    # One process, once: read it on a second thread while the database layer loads.
    early = None
    if pids and len(set(pids)) == 1 and every is None and name is None and not no_smaps:
        early = ahead.ReadAhead(proc, pids[0]) if ahead.worth_it() else None

    from memsnap.capture.sweep import Sweep

    with database(ctx, create=True) as db:
        sweep = Sweep(
            db,
            proc,
            smaps=not no_smaps,
            label=label,
            name=pattern,
            ahead=early,
        )
        # --name alone looks through every process, as --all --name does.
        code = record_live(sweep, list(pids) if pids else None, every, count, policy)
    if code:
        raise typer.Exit(code)


HOST_ID_MAX = 255  # the width of the processes.host column


def check_import_options(pid: int, host_id: str | None) -> None:
    if not 1 <= pid <= PID_MAX:
        raise UsageError(f"--pid takes a process id from 1 to {PID_MAX}, not {pid}")
    check_host_id(host_id)


def check_host_id(host_id: str | None) -> None:
    if host_id is not None and not (0 < len(host_id) <= HOST_ID_MAX and host_id.strip()):
        raise UsageError(f"--host-id takes a name of 1 to {HOST_ID_MAX} characters")


def import_file(
    ctx: typer.Context,
    source: str,
    pid: int,
    label: str | None,
    *,
    taken_at: datetime | None = None,
    host: str | None = None,
    smaps: bool = True,
) -> None:
    from memsnap.capture.record import IMPORTED_HOST, record_file

    with read_import(source) as text, database(ctx, create=True) as db:
        done = record_file(
            db,
            text,
            pid=pid,
            label=label,
            host=host or IMPORTED_HOST,
            taken_at=taken_at,
            smaps=smaps,
        )
    echo(summary_line(done))
