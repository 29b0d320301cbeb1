"""What every command shares: the database, output options, terminal detection.

Output options are declared once here (as sqlite-utils does) so every reading command
spells and checks them the same way. Each option takes exactly the values its command
accepts, checked while the command line is parsed (a bad value is Typer's usage error,
exit 2), and its help lists those values: no command checks one by hand afterwards.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING

import typer

from memsnap.model import KINDS
from memsnap.names import visible

if TYPE_CHECKING:
    from memsnap.store.database import Database
    from memsnap.store.repository import Repository


class OutputFormat(str, Enum):
    """The formats of `show` and `list`: rows, so CSV too."""

    table = "table"
    json = "json"
    csv = "csv"


class ShowFormat(str, Enum):
    """The formats of `show`: rows (so CSV too), or a page that draws them."""

    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


class DocumentFormat(str, Enum):
    """The formats of `diff` and `replay`: nested documents, which CSV cannot hold, or a
    page that draws them."""

    table = "table"
    json = "json"
    html = "html"


class SortKey(str, Enum):
    """How `show` and `diff` order regions: by address, or largest first."""

    address = "address"
    size = "size"
    rss = "rss"
    pss = "pss"
    swap = "swap"


FORMAT_OPTION = typer.Option(
    OutputFormat.table, "--format", "-f", help="Output format: table, json or csv."
)
SHOW_FORMAT_OPTION = typer.Option(
    ShowFormat.table,
    "--format",
    "-f",
    help="Output format: table, json, csv or html (a self-contained page).",
)
DOCUMENT_FORMAT_OPTION = typer.Option(
    DocumentFormat.table,
    "--format",
    "-f",
    help="Output format: table, json or html (a self-contained page).",
)
OUTPUT_OPTION = typer.Option(
    None,
    "--output",
    "-o",
    metavar="FILE",
    help="Write the document to FILE (created 0600) instead of standard output.",
)


def check_style(style: str) -> str:
    """A tabulate table format, or Typer's usage error naming the choices."""
    from tabulate import tabulate_formats  # here: only a command that prints a table needs it

    if style not in tabulate_formats:
        raise typer.BadParameter(
            f"unknown style {style!r}; choose one of: {', '.join(sorted(tabulate_formats))}"
        )
    return style


STYLE_OPTION = typer.Option(
    "simple",
    "--style",
    parser=check_style,
    metavar="STYLE",
    help="Any tabulate table format: simple, github, grid, plain, ...",
)
SORT_OPTION = typer.Option(
    SortKey.address,
    "--sort",
    help="Order regions by address, or largest first by size, rss, pss or swap.",
)

# The kinds a diff can report: `gap` is only what `show --gaps` draws between regions.
DIFF_KINDS = tuple(k for k in KINDS if k != "gap")


def _kind_parser(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        kinds = [k.strip() for k in value.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in choices]
        if unknown or not kinds:
            raise typer.BadParameter(
                f"unknown kind {(unknown or [value])[0]!r}; kinds are: {', '.join(choices)}"
            )
        return ",".join(kinds)

    return parse


SHOW_KIND_OPTION = typer.Option(
    None,
    "--kind",
    metavar="KIND[,KIND]",
    parser=_kind_parser(KINDS),
    help="Only regions of these kinds (comma list, repeatable): " + ", ".join(KINDS) + ".",
)
DIFF_KIND_OPTION = typer.Option(
    None,
    "--kind",
    metavar="KIND[,KIND]",
    parser=_kind_parser(DIFF_KINDS),
    help="Only regions of these kinds, in the regions and the kinds table (comma list, "
    "repeatable): " + ", ".join(DIFF_KINDS) + ".",
)


def chosen_kinds(values: list[str] | None) -> list[str]:
    """The kinds `--kind` options named, in order, each once (empty: every kind)."""
    kinds: list[str] = []
    for value in values or ():
        kinds += [k for k in value.split(",") if k not in kinds]
    return kinds


def use_color() -> bool:
    """Color only for a person: a terminal, and NO_COLOR not set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


@contextmanager
def database(ctx: typer.Context, create: bool = False, migrate: bool = True) -> Iterator[Database]:
    """The database `--db` names. Only a command that records passes `create`: a reading
    command on a missing database says nothing was recorded there yet. On a terminal, a
    writer kept waiting by another's lock says what it waits for. `migrate=False`: see
    `open_database`."""
    from memsnap.store.database import open_database

    db = open_database(
        ctx.obj["db"] if ctx.obj else None,
        create=create,
        notify=_notice if sys.stderr.isatty() else None,
        migrate=migrate,
    )
    try:
        yield db
    finally:
        db.close()


@contextmanager
def repository(ctx: typer.Context) -> Iterator[Repository]:
    """The store of the database `--db` names, for reading (see `database`)."""
    from memsnap.store.repository import Repository

    with database(ctx) as db, Repository(db) as repo:
        yield repo


def _notice(text: str) -> None:
    echo(f"memsnap: {text}", err=True)


def echo(text: str, err: bool = False, colours: bool = False) -> None:
    """Print a document; raw bytes and control characters show as `\\xNN`.

    The renderers already made every name visible; this is the net under them, so that
    nothing that came from a process or a database can drive the terminal. Only the
    document's own newlines stay, and memsnap's colour codes when it painted (`colours`).
    """
    typer.echo(visible(text, lines=True, colours=colours), err=err, color=colours or None)


def to_stdout(output: str | None) -> bool:
    """Whether the document goes to standard output (no `--output FILE`): a file never
    gets colour codes."""
    return output is None or output == "-"


def emit(text: str, output: str | None, colours: bool = False) -> None:
    """The document to standard output, or with `--output FILE` to FILE (0600), with a
    line on standard error that names it."""
    if output is None or to_stdout(output):
        echo(text, colours=colours)
        return
    from memsnap.cli.outfile import write_private
    from memsnap.units import human

    size = write_private(output, visible(text, lines=True, colours=colours) + "\n")
    echo(f"memsnap: wrote {output} ({human(size)})", err=True)
