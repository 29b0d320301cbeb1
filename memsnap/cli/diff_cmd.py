"""`memsnap diff A B` / `memsnap diff --pid PID` / `memsnap diff A --live`: what changed
between two snapshots, or between a snapshot and its process now."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    emit,
    repository,
    to_stdout,
    use_color,
)
from memsnap.cli.picking import id_argument, pid_option
from memsnap.errors import MemsnapError, UsageError

if TYPE_CHECKING:
    from memsnap.model import Region, Snapshot


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
    live: bool = typer.Option(
        False, "--live", help="Compare A with its process as it is now (nothing stored)."
    ),
) -> None:
    """Show what changed from snapshot A to snapshot B, or in a process's last step."""
    from memsnap import history
    from memsnap.render import snapshot as render
    from memsnap.render.diff import diff_json, diff_table, narrowed

    if pid is not None and a is not None:
        raise UsageError("give two snapshot ids or --pid PID, not both")
    if live and (a is None or b is not None):
        raise UsageError("--live compares one snapshot: diff ID --live")
    if pid is None and not live and (a is None or b is None):
        raise UsageError("give two snapshot ids A B, one and --live, or --pid PID")
    with repository(ctx) as store:
        if live:
            from memsnap.capture.live import diff_with_live

            assert a is not None
            before = store.snapshot(a)
            before_regions = store.layout(before)
            after, after_regions = _live_now(before)
            layouts = before_regions, after_regions
            result = diff_with_live(before, before_regions, after, after_regions)
        else:
            if pid is not None:
                before, after = history.last_two(store, pid)
            else:
                assert a is not None and b is not None
                before, after = store.snapshot(a), store.snapshot(b)
            result = history.diff_between(store, before, after)
            if fmt is DocumentFormat.html:  # the page draws both whole layouts
                layouts = store.layout(before), store.layout(after)
    result = narrowed(result, chosen_kinds(kind_options), sort.value)
    if fmt is DocumentFormat.html:
        from memsnap.render.html import diff_page

        emit(diff_page(result, *layouts), output)
    elif fmt is DocumentFormat.json:
        emit(render.dumps(diff_json(result)), output)
    else:
        color = to_stdout(output) and use_color()
        emit(diff_table(result, style, color, regions, sort.value), output, colours=color)


def _live_now(before: Snapshot) -> tuple[Snapshot, list[Region]]:
    """`diff A --live`: A's process as it is now, read on this host (nothing stored)."""
    from memsnap.capture.live import live_layout
    from memsnap.capture.procfs import Proc

    proc = Proc()
    if before.host != proc.host:
        raise MemsnapError(
            f"snapshot {before.id} was taken on {before.host}, not here ({proc.host}): "
            "--live reads a process on this host"
        )
    return live_layout(proc, before.pid)
