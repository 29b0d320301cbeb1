"""`memsnap replay --pid PID`: a process's recorded history, step by step."""

from __future__ import annotations

import itertools

import typer

from memsnap.cli.common import (
    DOCUMENT_FORMAT_OPTION,
    STYLE_OPTION,
    DocumentFormat,
    database,
    echo,
    use_color,
)
from memsnap.errors import NotFoundError
from memsnap.timeparse import parse_time


def replay(
    ctx: typer.Context,
    pid: int = typer.Option(..., "--pid", help="The process to replay."),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="Start at TIME (ISO 8601, epoch, '2h ago')."
    ),
    until: str | None = typer.Option(None, "--until", metavar="TIME", help="Stop at TIME."),
    fmt: DocumentFormat = DOCUMENT_FORMAT_OPTION,
    style: str = STYLE_OPTION,
) -> None:
    """Walk a process's snapshots in time order, with each step's change."""
    from memsnap import history, render
    from memsnap.render_diff import replay_json, replay_table

    start = parse_time(since) if since else None
    end = parse_time(until) if until else None
    with database(ctx) as db, db.reading() as conn:
        snaps = history.process_snapshots(conn, pid, start, end)
        if not snaps:
            raise NotFoundError(f"no snapshots of pid {pid} in that time")
        steps = [(snaps[0], None)] + [
            (b, history.diff_between(conn, a, b)) for a, b in itertools.pairwise(snaps)
        ]
    if fmt is DocumentFormat.json:
        echo(render.dumps(replay_json(steps)))
    else:
        color = use_color()
        echo(replay_table(steps, style, color), colours=color)
