"""`memsnap diff A B` / `memsnap diff --pid PID`: what changed between two snapshots."""

from __future__ import annotations

import typer

from memsnap.cli.common import (
    DIFF_KIND_OPTION,
    DOCUMENT_FORMAT_OPTION,
    OUTPUT_OPTION,
    SORT_OPTION,
    STYLE_OPTION,
    DocumentFormat,
    SortKey,
    chosen_kinds,
    database,
    emit,
    to_stdout,
    use_color,
)
from memsnap.cli.picking import id_argument, pid_option
from memsnap.errors import UsageError


def diff(
    ctx: typer.Context,
    a: int | None = id_argument("[A]", "The earlier snapshot id."),
    b: int | None = id_argument("[B]", "The later snapshot id."),
    pid: int | None = pid_option("The last two snapshots of this process (instead of A B)."),
    fmt: DocumentFormat = DOCUMENT_FORMAT_OPTION,
    style: str = STYLE_OPTION,
    regions: bool = typer.Option(
        False,
        "--regions",
        help="List every changed region, not just the first few (and Pss-only changes one by one).",
    ),
    kind_options: list[str] = DIFF_KIND_OPTION,
    sort: SortKey = SORT_OPTION,
    output: str | None = OUTPUT_OPTION,
) -> None:
    """Show what changed from snapshot A to snapshot B, or in a process's last step."""
    from memsnap import history
    from memsnap.render import snapshot as render
    from memsnap.render.diff import diff_json, diff_table, narrowed

    if pid is not None and a is not None:
        raise UsageError("give two snapshot ids or --pid PID, not both")
    if pid is None and (a is None or b is None):
        raise UsageError("give two snapshot ids A B, or --pid PID")
    with database(ctx) as db, db.reading() as conn:
        if pid is not None:
            before, after = history.last_two(conn, pid)
        else:
            assert a is not None and b is not None
            before, after = history.get_snapshot(conn, a), history.get_snapshot(conn, b)
        result = history.diff_between(conn, before, after)
        if fmt is DocumentFormat.html:  # the page draws both whole layouts
            layouts = history.layout(conn, before), history.layout(conn, after)
    result = narrowed(result, chosen_kinds(kind_options), sort.value)
    if fmt is DocumentFormat.html:
        from memsnap.render.html import diff_page

        emit(diff_page(result, *layouts), output)
    elif fmt is DocumentFormat.json:
        emit(render.dumps(diff_json(result)), output)
    else:
        color = to_stdout(output) and use_color()
        emit(diff_table(result, style, color, regions, sort.value), output, colours=color)
