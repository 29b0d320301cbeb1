"""`memsnap record`: snapshots of live processes, or of a saved maps/smaps text."""

from __future__ import annotations

import sys

import typer

from memsnap.cli.common import database, echo
from memsnap.errors import MemsnapError, UsageError
from memsnap.render import human

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
) -> None:
    """Take a snapshot of each process, or import a saved maps/smaps text."""
    from memsnap.procfs import Proc
    from memsnap.record import record_pid, record_text

    if from_file is not None:
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
    failures = 0
    proc = Proc()
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
