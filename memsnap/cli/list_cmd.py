"""`memsnap list`: the recorded snapshots, newest first."""

from __future__ import annotations

import re

import typer

from memsnap.cli.common import (
    FORMAT_OPTION,
    STYLE_OPTION,
    OutputFormat,
    database,
    echo,
)
from memsnap.errors import UsageError
from memsnap.timeparse import parse_time


def compile_name(name: str | None) -> str | None:
    """Check a --name regular expression up front, so a bad one is a usage error."""
    if name is None:
        return None
    try:
        re.compile(name)
    except re.error as exc:
        raise UsageError(f"--name {name!r} is not a valid regular expression: {exc}") from None
    return name


def list_snapshots(
    ctx: typer.Context,
    pid: int | None = typer.Option(None, "--pid", help="Only this pid."),
    name: str | None = typer.Option(
        None, "--name", help="Only commands matching this regular expression."
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="Taken at or after TIME (ISO 8601, epoch, '2h ago')."
    ),
    until: str | None = typer.Option(
        None, "--until", metavar="TIME", help="Taken at or before TIME."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many."),
    fmt: OutputFormat = FORMAT_OPTION,
    style: str = STYLE_OPTION,
) -> None:
    """List the recorded snapshots, newest first."""
    from memsnap import render
    from memsnap.history import SnapshotFilter
    from memsnap.history import list_snapshots as query

    flt = SnapshotFilter(
        pid=pid,
        name=compile_name(name),
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        limit=limit,
    )
    with database(ctx) as db, db.reading() as conn:
        snaps = query(conn, flt)
    if fmt is OutputFormat.json:
        echo(render.dumps({"snapshots": [render.snapshot_json(s) for s in snaps]}))
    elif fmt is OutputFormat.csv:
        echo(render.list_csv(snaps))
    elif snaps:
        echo(render.list_table(snaps, style))
    else:
        typer.echo(
            "no snapshots recorded yet"
            if flt == SnapshotFilter(limit=limit)
            else "no snapshots match",
            err=True,
        )
