"""`memsnap show`: the classified layout of one snapshot, or as it was at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import typer

from memsnap.cli.common import (
    OUTPUT_OPTION,
    SHOW_FORMAT_OPTION,
    SHOW_KIND_OPTION,
    SORT_OPTION,
    STYLE_OPTION,
    ShowFormat,
    SortKey,
    chosen_kinds,
    echo,
    emit,
    repository,
    to_stdout,
    use_color,
)
from memsnap.cli.picking import host_option, id_argument, name_option, pid_option
from memsnap.errors import UsageError
from memsnap.match import compile_name

if TYPE_CHECKING:
    from memsnap.model import Region, Snapshot
    from memsnap.store.repository import Repository


def show(
    ctx: typer.Context,
    snapshot_id: int | None = id_argument("[ID]", "Snapshot id."),
    at: str | None = typer.Option(
        None, "--at", metavar="TIME", help="The latest snapshot taken at or before TIME."
    ),
    pid: int | None = pid_option("With --at: the process."),
    name: str | None = name_option("With --at: the process, by a Python regex (as pgrep -f)."),
    host: str | None = host_option("With --at: only this host's snapshots."),
    fmt: ShowFormat = SHOW_FORMAT_OPTION,
    style: str = STYLE_OPTION,
    gaps: bool = typer.Option(False, "--gaps", help="Show unmapped holes as 'gap' rows."),
    top_down: bool = typer.Option(
        False, "--top-down", help="Highest address first (with the default --sort address)."
    ),
    kind_options: list[str] = SHOW_KIND_OPTION,
    summary: bool = typer.Option(False, "--summary", help="One row per kind."),
    sort: SortKey = SORT_OPTION,
    draw_map: bool = typer.Option(
        False, "--map", help="The address space as a strip across the terminal, with a legend."
    ),
    output: str | None = OUTPUT_OPTION,
    live: bool = typer.Option(
        False, "--live", help="ID is a PID: read the running process now (nothing stored)."
    ),
) -> None:
    """Show the classified layout of one snapshot."""
    from memsnap.render import snapshot as render
    from memsnap.store import reader
    from memsnap.timeparse import parse_time

    kinds = chosen_kinds(kind_options)
    if draw_map and (fmt is not ShowFormat.table or summary):
        raise UsageError("--map draws the layout itself: it takes no --format or --summary")
    if (snapshot_id is None) == (at is None):
        raise UsageError("give a snapshot ID or --at TIME (one of them)")
    if at is None and (pid is not None or name is not None or host is not None):
        raise UsageError("--pid, --name and --host select a process for --at")
    when = parse_time(at) if at is not None else None
    if live:
        if at is not None or snapshot_id is None:
            raise UsageError("--live shows a running process: show PID --live")
        snap, regions = _live(snapshot_id)
    else:
        from memsnap import history

        pattern = None if name is None else compile_name(name).pattern
        with repository(ctx) as store:
            if when is not None:
                snap = history.snapshot_at(store, when, pid=pid, name=pattern, host=host)
            else:
                assert snapshot_id is not None
                snap = store.snapshot(snapshot_id)
            with_gaps = gaps or "gap" in (kinds or ())
            kind_regions = sum(t.regions for t in snap.kinds.values())
            stored = snap.kinds and kind_regions == snap.totals.regions
            if summary and not with_gaps and stored:
                # The per-kind totals are stored with the snapshot: no region is read.
                show_stored_summary(snap, kinds or (), fmt, style, output)
                return
            if (
                not summary
                and not draw_map
                and fmt is not ShowFormat.html
                and to_stdout(output)  # a file is written whole, then renamed into place
                and not with_gaps
                and sort is SortKey.address
                and snap.totals.regions > reader.STREAM_REGIONS
                and show_streamed(store, snap, kinds or (), fmt, style, top_down)
            ):
                return
            regions = store.layout(snap)
    if gaps or "gap" in (kinds or ()):  # asking for the kind gap asks for the gaps
        regions = render.with_gaps(regions)
    if kinds:
        regions = [r for r in regions if r.kind in kinds]
    regions = render.sort_regions(regions, sort.value)
    if top_down and sort is SortKey.address:
        regions.reverse()
    if fmt is ShowFormat.html:
        from memsnap.render.html import show_page

        emit(show_page(snap, regions, top_down), output)
    elif draw_map:
        import shutil

        from memsnap.render.termmap import map_text

        color = to_stdout(output) and use_color()
        width = shutil.get_terminal_size().columns
        emit(map_text(snap, regions, width, color), output, colours=color)
    elif fmt is ShowFormat.json:
        doc: dict[str, Any] = {"snapshot": render.snapshot_json(snap)}
        if summary:
            doc["kinds"] = render.summary_json(regions)
        else:
            doc["regions"] = [render.region_json(r, snap.page_size) for r in regions]
        emit(render.dumps(doc), output)
    elif fmt is ShowFormat.csv and summary:
        emit(render.summary_csv(regions, snap.totals.size), output)
    elif fmt is ShowFormat.csv:
        emit(
            render.to_csv(
                (render.region_json(r, snap.page_size) for r in regions), render.REGION_CSV_FIELDS
            ),
            output,
        )
    elif summary:
        color = to_stdout(output) and use_color()
        emit(render.summary_table(snap, regions, style, color), output, colours=color)
    else:
        color = to_stdout(output) and use_color()
        emit(render.show_table(snap, regions, style, color), output, colours=color)


def show_stored_summary(
    snap: Snapshot, kinds: Sequence[str], fmt: ShowFormat, style: str, output: str | None
) -> None:
    """`show --summary` from the snapshot's stored per-kind totals."""
    from memsnap.render import snapshot as render

    by_kind = render.stored_kind_totals(snap.kinds, kinds)
    if fmt is ShowFormat.json:
        emit(
            render.dumps(
                {"snapshot": render.snapshot_json(snap), "kinds": render.summary_json_of(by_kind)}
            ),
            output,
        )
    elif fmt is ShowFormat.csv:
        emit(render.summary_csv_of(by_kind, snap.totals.size), output)
    else:
        color = to_stdout(output) and use_color()
        emit(render.summary_table_of(snap, by_kind, style, color), output, colours=color)


def show_streamed(
    store: Repository,
    snap: Snapshot,
    kinds: Sequence[str],
    fmt: ShowFormat,
    style: str,
    top_down: bool,
) -> bool:
    """`show` of a snapshot too big to hold, read and printed a batch of regions at a
    time; False (nothing printed) where only the whole layout will do (a table style
    that is not laid out a row at a time, fewer than two rows)."""
    from memsnap.render import stream as render_stream

    def batches() -> Iterator[list[Region]]:
        for batch in store.iter_layout(snap, descending=top_down):
            yield [r for r in batch if r.kind in kinds] if kinds else batch

    color = False
    chunks: Iterable[str] | None
    if fmt is ShowFormat.json:
        chunks = render_stream.json_chunks(snap, batches(), snap.page_size)
    elif fmt is ShowFormat.csv:
        chunks = render_stream.csv_chunks(batches(), snap.page_size)
    elif render_stream.can_stream_table(style):
        color = use_color()
        chunks = render_stream.table_chunks(snap, batches, style, color)
    else:
        chunks = None
    if chunks is None:
        return False
    for chunk in chunks:
        echo(chunk, colours=color)
    return True


def _live(pid: int) -> tuple[Snapshot, list[Region]]:
    """`show PID --live`: read and classified now, stored nowhere (no database opened)."""
    from memsnap.capture.live import live_layout
    from memsnap.capture.procfs import Proc

    return live_layout(Proc(), pid)
