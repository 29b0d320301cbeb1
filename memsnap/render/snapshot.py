"""Turning snapshots and regions into text: tables, JSON documents, CSV. Pure.

Tables go through tabulate (any of its formats via `--style`); colors are ANSI codes per
kind, added only when the caller says the output is a terminal. JSON follows docs/interface.md:
addresses as lower-case hex strings (64-bit values do not fit a JSON number exactly),
sizes in bytes, times ISO 8601 with an offset, and null (never 0) for what was not
recorded.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from memsnap.model import KINDS, SIZE_ATTRS, Region, Snapshot, Totals, columns_of, totals_by_kind
from memsnap.names import visible, visible_column
from memsnap.parse import encode_path
from memsnap.render.table import table, table_of_columns
from memsnap.units import human, plural

FORMAT_VERSION = 1

KIND_COLORS: dict[str, str] = {
    "text": "1;31",
    "lib-text": "31",
    "rodata": "1;35",
    "lib-rodata": "35",
    "data": "1;33",
    "lib-data": "33",
    "bss": "1;93",
    "lib-bss": "93",
    "heap": "1;32",
    "stack": "1;36",
    "thread-stack": "36",
    "anon": "32",
    "shmem": "1;34",
    "file": "34",
    "guard": "2",
    "vdso": "95",
    "vvar": "95",
    "vsyscall": "95",
    "other": "37",
    "gap": "2;37",
}


def paint(text: str, kind: str, color: bool) -> str:
    if not color or kind not in KIND_COLORS:
        return text
    return f"\x1b[{KIND_COLORS[kind]}m{text}\x1b[0m"


def paint_code(text: str, code: str, color: bool) -> str:
    """`text` in the colour `code` (an SGR code such as `1;31`) on a terminal."""
    return f"\x1b[{code}m{text}\x1b[0m" if color and text else text


def hexaddr(n: int) -> str:
    return f"0x{n:x}"


def local_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def display_path(region: Region) -> str:
    """A path for a table cell, as the kernel prints it: a newline as `\\012`, then
    ` (deleted)` where the file is gone; any other control character as `\\xNN`."""
    return visible(encode_path(region.path, region.deleted))


# --- JSON documents -----------------------------------------------------------------


def totals_json(t: Totals) -> dict[str, Any]:
    return {
        "regions": t.regions,
        "size": t.size,
        "rss": t.rss,
        "pss": t.pss,
        "swap": t.swap,
        "uss": t.uss,
    }


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    return {
        "id": s.id or None,  # a live read (show --live) has no id: stored ids start at 1
        "taken_at": s.taken_at.isoformat(),
        "pid": s.pid,
        "host": s.host,
        "command": s.command,
        "cmdline": list(s.cmdline),
        "exe": s.exe,
        "label": s.label,
        "page_size": s.page_size,
        "source": s.source,
        "totals": totals_json(s.totals),
        "seq": s.seq or None,
        "boot_id": s.identity.boot_id,
        "start_ticks": s.identity.start_ticks,
        "kernel": s.kernel,
        "has_smaps": s.has_smaps,
    }


def region_json(r: Region, page_size: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "start": hexaddr(r.start),
        "end": hexaddr(r.end),
        "size": r.size,
        "pages": r.size // page_size,
        "perms": r.perms,
        "offset": r.offset,
        "device": r.dev,
        "inode": r.inode,
        "path": r.path,
        "deleted": r.deleted,
        "kind": r.kind,
    }
    for attr in SIZE_ATTRS:
        doc[attr] = getattr(r, attr)
    doc["vm_flags"] = r.vm_flags
    return doc


# json escapes C0 controls itself, but with ensure_ascii=False not DEL and C1; these can
# only stand inside strings, where `\\u00NN` is their exact JSON spelling.
_JSON_UNESCAPED = re.compile("[\x7f-\x9f]")


def dumps(doc: dict[str, Any]) -> str:
    text = json.dumps({"format": FORMAT_VERSION, **doc}, indent=2, ensure_ascii=False)
    return _JSON_UNESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- show -----------------------------------------------------------------------------


# A 64-bit address space is split in halves: user space at the bottom, the kernel's at
# the top (where `[vsyscall]` lives), with addresses no pointer may hold in between.
KERNEL_HALF = 1 << 63
HOLE_PATH = "[non-canonical hole and kernel space]"


def _user_space_end(end: int) -> int:
    """Where user space ends above `end`: 2**47 (x86-64 with 4-level page tables, the
    usual case), 2**56 (5-level), else the kernel's half itself."""
    for bits in (47, 56):
        if end <= 1 << bits:
            return 1 << bits
    return KERNEL_HALF


def _gap(start: int, end: int, path: str | None = None) -> Region:
    return Region(start=start, end=end, perms="", offset=0, dev="", inode=0, path=path, kind="gap")


def with_gaps(regions: Sequence[Region]) -> list[Region]:
    """The regions with the unmapped holes between them as regions of kind `gap`.

    Between user space and a region in the kernel's half (`[vsyscall]`) lies no gap a
    process could map but the boundary: the rest of user space is a gap as any other, the
    range above it one row of its own, named by its path `HOLE_PATH`. A 32-bit text has
    no such boundary in it (its kernel split is not in the text), so nothing changes there.
    """
    out: list[Region] = []
    for prev, cur in zip([None, *regions[:-1]], regions, strict=True):
        if prev is not None and cur.start > prev.end:
            if prev.end < KERNEL_HALF <= cur.start:
                top = _user_space_end(prev.end)
                if top > prev.end:
                    out.append(_gap(prev.end, top))
                out.append(_gap(top, cur.start, HOLE_PATH))
            else:
                out.append(_gap(prev.end, cur.start))
        out.append(cur)
    return out


def _is_hole(r: Region) -> bool:
    return r.kind == "gap" and r.path == HOLE_PATH


def show_columns(
    regions: Sequence[Region], page_size: int, color: bool, width: int | None = None
) -> list[list[str]]:
    """The show table column by column (built a column at a time: a layout can hold
    65,530 regions); on a terminal every cell takes its region's kind's color. Addresses
    are `width` hex digits (default: as many as the highest end needs)."""
    width = width or max((len(f"{r.end:x}") for r in regions), default=12)
    span = f"{{:0{width}x}}-{{:0{width}x}}".format
    kinds = [r.kind for r in regions]
    sizes = [r.end - r.start for r in regions]
    holes = [i for i, k in enumerate(kinds) if k == "gap" and _is_hole(regions[i])]
    counts = [str(size // page_size) for size in sizes]
    shown = list(map(human, sizes))
    for i in holes:
        shown[i], counts[i] = "-", ""
    columns = [
        visible_column(kinds),  # a database's rows are text like any other
        list(map(span, (r.start for r in regions), (r.end for r in regions))),
        shown,
        counts,
        visible_column([r.perms for r in regions]),
        [human(r.rss) if r.kind != "gap" else "" for r in regions],
        visible_column(
            list(map(encode_path, (r.path for r in regions), (r.deleted for r in regions)))
        ),
    ]
    if color:
        columns = [
            [paint(c, k, True) if c else c for c, k in zip(col, kinds, strict=True)]
            for col in columns
        ]
    return columns


SHOW_HEADERS = ["kind", "start-end", "size", "pages", "perms", "rss", "path"]


def show_table(
    snapshot: Snapshot, regions: Sequence[Region], style: str, color: bool, legend: bool = True
) -> str:
    head = snapshot_heading(snapshot)
    align = ("left", "left", "right", "right", "left", "right", "left")
    if regions:
        body = table_of_columns(
            show_columns(regions, snapshot.page_size, color), SHOW_HEADERS, style, align
        )
    else:
        body = table([], SHOW_HEADERS, style, align)
    parts = [head, body]
    if legend and color:
        present = [k for k in KINDS if any(r.kind == k for r in regions)]
        parts.append("legend: " + "  ".join(paint(k, k, True) for k in present))
    return "\n".join(parts)


def snapshot_name(s: Snapshot) -> str:
    """`snapshot 7`, or `live` for a process read now and not stored (id 0)."""
    return f"snapshot {s.id}" if s.id else "live"


def snapshot_heading(s: Snapshot) -> str:
    t = s.totals
    label = f"  label: {visible(s.label)}" if s.label else ""
    return (
        f"{snapshot_name(s)}: pid {s.pid} ({visible(s.command)}) on {visible(s.host)} at "
        f"{local_time(s.taken_at)}{label}\n"
        f"{plural(t.regions, 'region')}, {human(t.size)} virtual, {human(t.rss)} resident, "
        f"{human(t.pss)} proportional, {human(t.swap)} swapped\n"
    )


def _by_kind(regions: Sequence[Region]) -> list[tuple[str, Totals]]:
    """Totals per kind, in the order of the kinds table (docs/interface.md) (the boundary above user
    space is no gap a process left)."""
    regions = [r for r in regions if not _is_hole(r)]
    totals = totals_by_kind(columns_of(regions), [r.kind for r in regions])
    return [(kind, totals[kind]) for kind in KINDS if kind in totals]


def _share(size: int, total: int) -> str:
    return f"{100 * size / (total or 1):.1f}%"


def summary_rows(regions: Sequence[Region], color: bool, total_size: int) -> list[list[str]]:
    """One row per kind; "of total" is of the whole process (`total_size`), also when
    `--kind` kept only some kinds."""
    return summary_rows_of(_by_kind(regions), color, total_size)


KindTotals = list[tuple[str, Totals]]


def stored_kind_totals(kinds: dict[str, Totals], only: Sequence[str] = ()) -> KindTotals:
    """A snapshot's stored per-kind totals (of `only` those kinds, when given) in the
    order the summaries use: what summing its regions would give, without reading one."""
    return [(k, kinds[k]) for k in KINDS if k in kinds and (not only or k in only)]


def summary_rows_of(by_kind: KindTotals, color: bool, total_size: int) -> list[list[str]]:
    """`summary_rows` from per-kind totals."""
    return [
        [
            paint(kind, kind, color),
            str(t.regions),
            human(t.size),
            _share(t.size, total_size) if kind != "gap" else "",
            human(t.rss),
            human(t.pss),
            human(t.swap),
            human(t.uss),
        ]
        for kind, t in by_kind
    ]


SUMMARY_HEADERS = ["kind", "regions", "size", "of total", "rss", "pss", "swap", "uss"]


def summary_table(snapshot: Snapshot, regions: Sequence[Region], style: str, color: bool) -> str:
    return summary_table_of(snapshot, _by_kind(regions), style, color)


def summary_table_of(snapshot: Snapshot, by_kind: KindTotals, style: str, color: bool) -> str:
    body = table(
        summary_rows_of(by_kind, color, snapshot.totals.size),
        SUMMARY_HEADERS,
        style,
        ("left",) + ("right",) * 7,
    )
    return snapshot_heading(snapshot) + "\n" + body


def summary_json(regions: Sequence[Region]) -> dict[str, Any]:
    return summary_json_of(_by_kind(regions))


def summary_json_of(by_kind: KindTotals) -> dict[str, Any]:
    return {kind: totals_json(t) for kind, t in by_kind}


SUMMARY_CSV_FIELDS = ["kind", "regions", "size", "of_total", "rss", "pss", "swap", "uss"]


def summary_csv(regions: Sequence[Region], total_size: int) -> str:
    """`--summary --format csv`: the summary's rows, sizes in bytes, `of_total` a fraction
    of the whole process's size (empty for gaps)."""
    return summary_csv_of(_by_kind(regions), total_size)


def summary_csv_of(by_kind: KindTotals, total_size: int) -> str:
    rows = [
        {
            "kind": kind,
            **totals_json(t),
            "of_total": "" if kind == "gap" else round(t.size / (total_size or 1), 6),
        }
        for kind, t in by_kind
    ]
    return to_csv(rows, SUMMARY_CSV_FIELDS)


_SIZE_ORDER = {"size", "rss", "pss", "swap"}


def sort_regions(regions: list[Region], key: str) -> list[Region]:
    """`--sort`: by address (as given), or largest first by a size; an unknown size (no
    smaps) sorts last, ties by address."""
    if key not in _SIZE_ORDER:
        return regions
    if key == "size":
        return sorted(regions, key=lambda r: (-r.size, r.start))
    return sorted(
        regions, key=lambda r: (getattr(r, key) is None, -(getattr(r, key) or 0), r.start)
    )


REGION_CSV_FIELDS = [
    "start",
    "end",
    "size",
    "pages",
    "perms",
    "offset",
    "device",
    "inode",
    "path",
    "deleted",
    "kind",
    *SIZE_ATTRS,
    "vm_flags",
]


def _csv_value(value: Any) -> Any:
    """CSV cells as JSON spells them: empty for null, `true`/`false` for flags; text with
    every control character as `\\xNN`, newlines too, so that each row is one line on a
    terminal and in `grep` or `wc -l` (the exact text is in the JSON document)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return visible(value)
    return value


def to_csv(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buf.getvalue().rstrip("\n")


# --- list -----------------------------------------------------------------------------

LIST_HEADERS = [
    "id",
    "taken at",
    "pid",
    "command",
    "regions",
    "virtual",
    "rss",
    "uss",
    "source",
    "label",
]


def list_rows(snaps: Sequence[Snapshot]) -> list[list[str]]:
    return [
        [
            str(s.id),
            local_time(s.taken_at),
            str(s.pid),
            visible(s.command),
            str(s.totals.regions),
            human(s.totals.size),
            human(s.totals.rss),
            human(s.totals.uss),
            visible(s.source),
            visible(s.label or ""),
        ]
        for s in snaps
    ]


def list_table(snaps: Sequence[Snapshot], style: str) -> str:
    return table(
        list_rows(snaps),
        LIST_HEADERS,
        style,
        ("right", "left", "right", "left", "right", "right", "right", "right", "left", "left"),
    )


LIST_CSV_FIELDS = [
    "id",
    "taken_at",
    "pid",
    "host",
    "command",
    "exe",
    "label",
    "source",
    "regions",
    "size",
    "rss",
    "pss",
    "swap",
    "uss",
]


def list_csv(snaps: Sequence[Snapshot]) -> str:
    rows = []
    for s in snaps:
        rows.append({**snapshot_json(s), **totals_json(s.totals)})
    return to_csv(rows, LIST_CSV_FIELDS)
