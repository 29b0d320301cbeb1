"""`memsnap diff A B`: what changed from snapshot A to snapshot B."""

from __future__ import annotations

import typer

from memsnap.cli.common import STYLE_OPTION, OutputFormat, check_style, database, echo, use_color
from memsnap.errors import UsageError


def diff(
    ctx: typer.Context,
    a: int = typer.Argument(..., metavar="A", help="The earlier snapshot id."),
    b: int = typer.Argument(..., metavar="B", help="The later snapshot id."),
    fmt: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="Output format: table or json."
    ),
    style: str = STYLE_OPTION,
    regions: bool = typer.Option(
        False, "--regions", help="List every changed region, not just the first few."
    ),
) -> None:
    """Show what changed from snapshot A to snapshot B."""
    from memsnap import history, render
    from memsnap.render_diff import diff_json, diff_table

    check_style(style)
    if fmt is OutputFormat.csv:
        raise UsageError("diff has no csv format: use table or json")
    with database(ctx) as db, db.reading() as conn:
        result = history.diff_between(
            conn, history.get_snapshot(conn, a), history.get_snapshot(conn, b)
        )
    if fmt is OutputFormat.json:
        echo(render.dumps(diff_json(result)))
    else:
        color = use_color()
        echo(diff_table(result, style, color, regions), colours=color)
