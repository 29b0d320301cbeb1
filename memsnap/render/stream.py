"""`show` of a snapshot too big to hold (millions of regions): the same table, JSON and
CSV text as `render` makes of a whole layout, made a batch of regions at a time.

Each function takes the regions as batches in display order and yields the document in
chunks of whole lines, without the last newline (as `echo` prints them). The text is
exactly what the whole-layout renderers give: each chunk is cut from their own output
for one batch. A table needs its column widths before its first row: it reads the
regions twice (`batches` is called twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from memsnap.model import KINDS, Region, Snapshot
from memsnap.render import snapshot as render
from memsnap.render.table import FAST_STYLES, pad_column, visible_width, widest_cell

_REGIONS_OPEN = '"regions": [\n'
_DOCUMENT_CLOSE = "\n  ]\n}"


def json_chunks(
    snapshot: Snapshot, batches: Iterable[list[Region]], page_size: int
) -> Iterator[str]:
    """`show --format json`: the snapshot, then its regions a batch at a time."""
    doc = render.snapshot_json(snapshot)
    bodies = (_regions_body(batch, page_size) for batch in batches if batch)
    before = next(bodies, None)
    if before is None:
        yield render.dumps({"snapshot": doc, "regions": []})
        return
    head = render.dumps({"snapshot": doc, "regions": [None]})
    yield head[: head.rindex("\n    null" + _DOCUMENT_CLOSE)]
    for body in bodies:
        yield before + ","
        before = body
    yield before
    yield _DOCUMENT_CLOSE.lstrip("\n")


def _regions_body(batch: list[Region], page_size: int) -> str:
    """The lines a batch of regions takes inside the document's `regions` list."""
    part = render.dumps({"regions": [render.region_json(r, page_size) for r in batch]})
    return part[part.index(_REGIONS_OPEN) + len(_REGIONS_OPEN) : part.rindex(_DOCUMENT_CLOSE)]


def csv_chunks(batches: Iterable[list[Region]], page_size: int) -> Iterator[str]:
    """`show --format csv`: the header, then the rows a batch at a time."""
    first = True
    for batch in batches:
        if not batch:
            continue
        text = render.to_csv(
            (render.region_json(r, page_size) for r in batch), render.REGION_CSV_FIELDS
        )
        yield text if first else text.split("\n", 1)[1]
        first = False
    if first:
        yield render.to_csv([], render.REGION_CSV_FIELDS)


_ALIGN = ("left", "left", "right", "right", "left", "right", "left")


def can_stream_table(style: str) -> bool:
    return style in FAST_STYLES


def table_chunks(
    snapshot: Snapshot,
    batches: Callable[[], Iterable[list[Region]]],
    style: str,
    color: bool,
) -> Iterator[str] | None:
    """`show` as a table (a style `can_stream_table`): one pass for the widths, one for
    the rows. None when fewer than two regions are shown (tabulate lays those out)."""
    count, high = 0, 0
    present: set[str] = set()
    widest: list[str] = [""] * len(render.SHOW_HEADERS)
    first: Region | None = None
    for batch in batches():
        if not batch:
            continue
        first = first or batch[0]
        count += len(batch)
        high = max(high, max(r.end for r in batch))
        present.update(r.kind for r in batch)
        for i, column in enumerate(render.show_columns(batch, snapshot.page_size, color)):
            cell = widest_cell(column)
            if visible_width(cell) > visible_width(widest[i]):
                widest[i] = cell
    if count < 2 or first is None:
        return None
    width = len(f"{high:x}")
    widest[1] = render.show_columns([first], snapshot.page_size, color, width)[1][0]
    return _table_lines(snapshot, batches, style, color, widest, width, present)


def _table_lines(
    snapshot: Snapshot,
    batches: Callable[[], Iterable[list[Region]]],
    style: str,
    color: bool,
    widest: Sequence[str],
    width: int,
    present: set[str],
) -> Iterator[str]:
    from tabulate import tabulate

    headers = render.SHOW_HEADERS
    sample = tabulate(
        [list(widest)],
        headers=list(headers),
        tablefmt=style,
        disable_numparse=True,
        colalign=list(_ALIGN),
    ).split("\n")
    widths = [
        max(visible_width(h) + 2, visible_width(w)) for h, w in zip(headers, widest, strict=True)
    ]
    yield render.snapshot_heading(snapshot) + "\n" + "\n".join(sample[: FAST_STYLES[style]])
    for batch in batches():
        if not batch:
            continue
        columns = render.show_columns(batch, snapshot.page_size, color, width)
        padded = [pad_column(col, w, a) for col, w, a in zip(columns, widths, _ALIGN, strict=True)]
        yield "\n".join(map(str.rstrip, map("  ".join, zip(*padded, strict=True))))
    if color:
        kinds = [k for k in KINDS if k in present]
        yield "legend: " + "  ".join(render.paint(k, k, True) for k in kinds)
