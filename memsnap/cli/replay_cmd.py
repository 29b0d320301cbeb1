"""`memsnap replay --pid PID | --name REGEX`: one process's recorded history, step by step."""

from __future__ import annotations

import itertools

import typer

from memsnap.cli.common import (
    DOCUMENT_FORMAT_OPTION,
    OUTPUT_OPTION,
    STYLE_OPTION,
    DocumentFormat,
    emit,
    repository,
    to_stdout,
    use_color,
)
from memsnap.cli.picking import host_option, name_option, pid_option
from memsnap.errors import UsageError
from memsnap.match import compile_name
from memsnap.timeparse import parse_time


def replay(
    ctx: typer.Context,
    pid: int | None = pid_option("The process to replay."),
    name: str | None = name_option(
        "The process to replay, by a Python regex on its command line, command or program "
        "(as pgrep -f); one process must match."
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="Start at TIME (ISO 8601, epoch, '2h ago')."
    ),
    until: str | None = typer.Option(None, "--until", metavar="TIME", help="Stop at TIME."),
    host: str | None = host_option("The process's host (the name `record --host-id` gave)."),
    fmt: DocumentFormat = DOCUMENT_FORMAT_OPTION,
    style: str = STYLE_OPTION,
    output: str | None = OUTPUT_OPTION,
) -> None:
    """Walk one process's snapshots in time order, with each step's change."""
    from memsnap import history
    from memsnap.render import snapshot as render
    from memsnap.render.diff import replay_json, replay_table

    if pid is None and name is None:
        raise UsageError("replay needs the process: --pid PID or --name REGEX")
    pattern = None if name is None else compile_name(name).pattern
    start = parse_time(since) if since else None
    end = parse_time(until) if until else None
    with repository(ctx) as store:
        snaps = history.process_snapshots(store, pid, start, end, name=pattern, host=host)
        steps = [(snaps[0], None)] + [
            (b, history.diff_between(store, a, b)) for a, b in itertools.pairwise(snaps)
        ]
        # The page embeds the first layout and then only the changes.
        first = store.layout(snaps[0]) if fmt is DocumentFormat.html else []
    if fmt is DocumentFormat.html:
        from memsnap.render.html import replay_page

        emit(replay_page(steps, first), output)
    elif fmt is DocumentFormat.json:
        emit(render.dumps(replay_json(steps)), output)
    else:
        color = to_stdout(output) and use_color()
        emit(replay_table(steps, style, color), output, colours=color)
