"""`memsnap diff A B`: what changed from snapshot A to snapshot B."""

from __future__ import annotations

import typer

from memsnap.cli.common import (
    DIFF_KIND_OPTION,
    DOCUMENT_FORMAT_OPTION,
    SORT_OPTION,
    STYLE_OPTION,
    DocumentFormat,
    SortKey,
    chosen_kinds,
    database,
    echo,
    use_color,
)


def diff(
    ctx: typer.Context,
    a: int = typer.Argument(..., metavar="A", help="The earlier snapshot id."),
    b: int = typer.Argument(..., metavar="B", help="The later snapshot id."),
    fmt: DocumentFormat = DOCUMENT_FORMAT_OPTION,
    style: str = STYLE_OPTION,
    regions: bool = typer.Option(
        False,
        "--regions",
        help="List every changed region, not just the first few (and Pss-only changes one by one).",
    ),
    kind_options: list[str] = DIFF_KIND_OPTION,
    sort: SortKey = SORT_OPTION,
) -> None:
    """Show what changed from snapshot A to snapshot B."""
    from memsnap import history, render
    from memsnap.render_diff import diff_json, diff_table, narrowed

    with database(ctx) as db, db.reading() as conn:
        result = history.diff_between(
            conn, history.get_snapshot(conn, a), history.get_snapshot(conn, b)
        )
    result = narrowed(result, chosen_kinds(kind_options), sort.value)
    if fmt is DocumentFormat.json:
        echo(render.dumps(diff_json(result)))
    else:
        color = use_color()
        echo(diff_table(result, style, color, regions, sort.value), colours=color)
