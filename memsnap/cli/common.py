"""What every command shares: the database, output options, terminal detection.

Output options are declared once here (as sqlite-utils does) so every reading command
spells and checks them the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING

import typer

from memsnap.errors import UsageError
from memsnap.names import visible

if TYPE_CHECKING:
    from memsnap.store.database import Database


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


FORMAT_OPTION = typer.Option(
    OutputFormat.table, "--format", "-f", help="Output format: table, json or csv."
)
STYLE_OPTION = typer.Option(
    "simple", "--style", help="Any tabulate table format: simple, github, grid, plain, ..."
)


def check_style(style: str) -> str:
    from tabulate import tabulate_formats

    if style not in tabulate_formats:
        raise UsageError(
            f"unknown --style {style!r}; choose one of: {', '.join(sorted(tabulate_formats))}"
        )
    return style


def use_color() -> bool:
    """Color only for a person: a terminal, and NO_COLOR not set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


@contextmanager
def database(ctx: typer.Context) -> Iterator[Database]:
    from memsnap.store.database import open_database

    db = open_database(ctx.obj["db"] if ctx.obj else None)
    try:
        yield db
    finally:
        db.close()


def echo(text: str, err: bool = False, colours: bool = False) -> None:
    """Print a document; raw bytes and control characters show as `\\xNN`.

    The renderers already made every name visible; this is the net under them, so that
    nothing that came from a process or a database can drive the terminal. Only the
    document's own newlines stay, and memsnap's colour codes when it painted (`colours`).
    """
    typer.echo(visible(text, lines=True, colours=colours), err=err, color=colours or None)
