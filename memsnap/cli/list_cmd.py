"""`memsnap list`: the recorded snapshots, newest first."""

from __future__ import annotations

import typer

from memsnap.cli.common import (
    FORMAT_OPTION,
    OUTPUT_OPTION,
    STYLE_OPTION,
    OutputFormat,
    echo,
    emit,
    repository,
)
from memsnap.cli.picking import host_option, limit_option, name_option, pid_option
from memsnap.match import compile_name
from memsnap.timeparse import parse_time


def list_snapshots(
    ctx: typer.Context,
    pid: int | None = pid_option("Only this pid (every process that had it)."),
    name: str | None = name_option(),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="Taken at or after TIME (ISO 8601, epoch, '2h ago')."
    ),
    until: str | None = typer.Option(
        None, "--until", metavar="TIME", help="Taken at or before TIME."
    ),
    limit: int | None = limit_option(),
    host: str | None = host_option(),
    fmt: OutputFormat = FORMAT_OPTION,
    style: str = STYLE_OPTION,
    output: str | None = OUTPUT_OPTION,
) -> None:
    """List the recorded snapshots, newest first."""
    from memsnap.history import describe_processes, group_processes
    from memsnap.model import SnapshotFilter
    from memsnap.render import snapshot as render

    flt = SnapshotFilter(
        pid=pid,
        name=name if name is None else compile_name(name).pattern,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        limit=limit,
        host=host,
    )
    with repository(ctx) as store:
        snaps = store.snapshots(flt)
    if pid is not None and len(seen := group_processes(snaps)) > 1:
        # The rows are the choice here: all are listed, and the note says they are of
        # different processes (a reused pid, or an import given the pid).
        echo(
            f"memsnap: note: pid {pid} names {len(seen)} processes here: "
            f"{describe_processes(seen)}",
            err=True,
        )
    if fmt is OutputFormat.json:
        emit(render.dumps({"snapshots": [render.snapshot_json(s) for s in snaps]}), output)
    elif fmt is OutputFormat.csv:
        emit(render.list_csv(snaps), output)
    elif snaps:
        emit(render.list_table(snaps, style), output)
    else:
        typer.echo(
            "no snapshots recorded yet"
            if flt == SnapshotFilter(limit=limit)
            else "no snapshots match",
            err=True,
        )
