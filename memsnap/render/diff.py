"""Turning diffs and replays into text: the table a person reads, the JSON a script reads.

The table leads with what a person asks first: which libraries came and went, how the
heap and stack moved, which kinds grew most (sorted by the size of the change), what
became executable; then the region detail, cut to a screenful unless asked for all, in
the order a person asks about regions: added and removed, permission changes (newly
executable first), size changes, resident and other changes, and last the regions whose
only change is Pss (which moves whenever another process maps the same pages), summed
into one line unless `--regions` asks for them. JSON keeps every change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from memsnap.diff import Amount, Diff, Movement, RegionChange
from memsnap.model import Region, Snapshot
from memsnap.names import visible
from memsnap.render.snapshot import (
    display_path,
    hexaddr,
    local_time,
    paint,
    paint_code,
    region_json,
    snapshot_json,
)
from memsnap.render.table import table
from memsnap.units import human, plural, signed_human

WARNING_COLOR = "1;31"

REGION_DETAIL_LIMIT = 20


# --- JSON ------------------------------------------------------------------------------


def amount_json(a: Amount | None) -> dict[str, Any] | None:
    return None if a is None else {"size": a.size, "rss": a.rss}


def movement_json(m: Movement | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "before": amount_json(m.before),
        "after": amount_json(m.after),
        "delta": amount_json(m.delta),
    }


def diff_json(d: Diff) -> dict[str, Any]:
    page_a, page_b = d.before.page_size, d.after.page_size
    return {
        "from": snapshot_json(d.before),
        "to": snapshot_json(d.after),
        "match": d.match,
        "libraries": {"loaded": list(d.loaded), "unloaded": list(d.unloaded)},
        "heap": movement_json(d.heap),
        "stack": movement_json(d.stack),
        "kinds": {k: movement_json(m) for k, m in d.kinds.items()},
        "totals": movement_json(d.totals),
        "regions": {
            "added": [region_json(r, page_b) for r in d.added],
            "removed": [region_json(r, page_a) for r in d.removed],
            "changed": [
                {
                    "before": region_json(c.before, page_a),
                    "after": region_json(c.after, page_b),
                    "changes": list(c.changes),
                }
                for c in d.changed
            ],
        },
        "callouts": {
            "new_executable": [region_json(r, page_b) for r in d.new_executable],
            "writable_executable": [region_json(r, page_b) for r in d.writable_executable],
            "made_executable": [
                {"before": region_json(c.before, page_a), "after": region_json(c.after, page_b)}
                for c in d.made_executable
            ],
        },
    }


# --- narrowing and order ----------------------------------------------------------------


def _change_size(c: RegionChange, key: str) -> int | None:
    if key == "size":
        return abs(c.after.size - c.before.size)
    x, y = getattr(c.before, key), getattr(c.after, key)
    return None if x is None or y is None else abs(y - x)


def _region_order(key: str) -> Callable[[Region], tuple[int, int, int]]:
    def order(r: Region) -> tuple[int, int, int]:
        if key == "address":
            return (0, 0, r.start)
        value = r.size if key == "size" else getattr(r, key)
        return (value is None, -(value or 0), r.start)

    return order


def _change_order(key: str) -> Callable[[RegionChange], tuple[int, int, int]]:
    def order(c: RegionChange) -> tuple[int, int, int]:
        if key == "address":
            return (0, 0, c.after.start)
        value = _change_size(c, key)
        return (value is None, -(value or 0), c.after.start)

    return order


def narrowed(d: Diff, kinds: Sequence[str], sort: str = "address") -> Diff:
    """The diff as `--kind` and `--sort` ask: only regions of those kinds (a changed one
    when either side is of them) and only those kinds' totals; libraries, heap, stack and
    totals stay the whole process's. Regions in address order, or largest first by the
    size (of an added or removed region) or the size of the change."""
    if kinds:
        chosen = set(kinds)
        d = replace(
            d,
            added=tuple(r for r in d.added if r.kind in chosen),
            removed=tuple(r for r in d.removed if r.kind in chosen),
            changed=tuple(
                c for c in d.changed if c.before.kind in chosen or c.after.kind in chosen
            ),
            kinds={k: m for k, m in d.kinds.items() if k in chosen},
        )
    if sort != "address":
        d = replace(
            d,
            added=tuple(sorted(d.added, key=_region_order(sort))),
            removed=tuple(sorted(d.removed, key=_region_order(sort))),
            changed=tuple(sorted(d.changed, key=_change_order(sort))),
        )
    return d


# --- table -----------------------------------------------------------------------------


def _elapsed(a: datetime, b: datetime) -> str:
    seconds = int(abs((b - a).total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    parts.append(f"{seconds}s")
    return " ".join(parts[:2]) + (" later" if b >= a else " earlier")


def _who(s: Snapshot) -> str:
    return f"pid {s.pid} ({visible(s.command)}) on {visible(s.host)}"


def diff_heading(d: Diff) -> str:
    a, b = d.before, d.after
    how = (
        "same process: matched by address"
        if d.match == "address"
        else ("different processes: matched by path, offset and kind")
    )
    who = _who(a) if a.process_id == b.process_id else f"{_who(a)} -> {_who(b)}"
    head = (
        f"diff {a.id or 'live'} -> {b.id or 'live'}: {who}\n"
        f"{local_time(a.taken_at)} -> {local_time(b.taken_at)} "
        f"({_elapsed(a.taken_at, b.taken_at)}); {how}"
    )
    without = [s.id for s in (a, b) if not s.has_smaps]
    if without:
        which = " and ".join(f"snapshot {i}" for i in without)
        head += (
            f"\n{which} {'was' if len(without) == 1 else 'were'} recorded without smaps: "
            "rss, pss and swap are not compared, only sizes, addresses, permissions and paths"
        )
    return head


def _library_lines(d: Diff) -> list[str]:
    return [f"+ {visible(p)}" for p in d.loaded] + [f"- {visible(p)}" for p in d.unloaded]


def _libraries_block(d: Diff) -> str:
    lines = _library_lines(d)
    if not lines:
        return "libraries: none loaded or unloaded"
    head = f"libraries: {len(d.loaded)} loaded, {len(d.unloaded)} unloaded\n"
    return head + "\n".join(f"  {line}" for line in lines)


def _side(a: Amount | None) -> str:
    return "-" if a is None else human(a.size)


def _side_rss(a: Amount | None) -> str:
    return "-" if a is None else human(a.rss)


def _movement_row(name: str, m: Movement, color: bool) -> list[str]:
    delta = m.delta
    return [
        paint(visible(name), name, color),
        _side(m.before),
        _side(m.after),
        signed_human(delta.size),
        _side_rss(m.before),
        _side_rss(m.after),
        signed_human(delta.rss),
    ]


MOVEMENT_HEADERS = [
    "",
    "size before",
    "size after",
    "change",
    "rss before",
    "rss after",
    "rss change",
]


def _by_change(item: tuple[str, Movement]) -> tuple[int, int]:
    delta = item[1].delta
    return (-abs(delta.size), -abs(delta.rss or 0))


def movements_table(d: Diff, style: str, color: bool) -> str:
    rows = []
    for name, m in (("heap", d.heap), ("stack", d.stack)):
        if m is not None:
            rows.append(_movement_row(name, m, color))
    body = (
        table(
            rows,
            MOVEMENT_HEADERS,
            style,
            ("left",) + ("right",) * 6,
        )
        if rows
        else "no heap or stack"
    )
    kind_rows = [
        _movement_row(k, m, color) for k, m in sorted(d.kinds.items(), key=_by_change) if m.moved
    ]
    kind_rows.append(_movement_row("total", d.totals, False))
    kinds = table(
        kind_rows,
        ["kind", *MOVEMENT_HEADERS[1:]],
        style,
        ("left",) + ("right",) * 6,
    )
    return body + "\n\n" + kinds


def _region_line(r: Region) -> str:
    line = (
        f"{hexaddr(r.start)}-{hexaddr(r.end)} {visible(r.perms)} {visible(r.kind)} {human(r.size)}"
    )
    path = display_path(r)
    return f"{line} {path}" if path else line


def callouts_block(d: Diff, color: bool = False) -> str:
    """The lines a security reviewer looks for first; each region is named once; in red
    on a terminal."""
    lines: list[str] = []
    writable = d.writable_executable
    flagged = {r.start for r in writable}
    for r in writable:
        lines.append(f"! writable and executable: {_region_line(r)}")
    for r in d.new_executable:
        if r.start not in flagged:
            lines.append(f"! new executable memory: {_region_line(r)}")
    for c in d.made_executable:
        if c.after.start not in flagged:
            lines.append(
                f"! made executable ({visible(c.before.perms)} -> {visible(c.after.perms)}): "
                f"{_region_line(c.after)}"
            )
    return "\n".join(paint_code(line, WARNING_COLOR, color) for line in lines)


def _whole_row(sign: str, r: Region, what: str, color: bool) -> list[str]:
    """A region that was added or removed whole."""
    return [
        sign,
        paint(visible(r.kind), r.kind, color),
        f"{r.start:x}-{r.end:x}",
        human(r.size),
        visible(r.perms),
        human(r.rss),
        display_path(r),
        what,
    ]


def _change_group(c: RegionChange) -> int:
    """Where a change stands in the table: permissions (newly executable first), size,
    then resident and the rest; Pss-only changes last."""
    if c.before.perms != c.after.perms:
        return 1 if "x" in c.after.perms and "x" not in c.before.perms else 2
    if {"size", "start", "end"} & set(c.changes):
        return 3
    if c.changes == ("pss",):
        return 5
    return 4


def pss_only(d: Diff) -> list[RegionChange]:
    return [c for c in d.changed if _change_group(c) == 5]


def _detail_rows(d: Diff, color: bool, with_pss_only: bool, sort: str) -> list[list[str]]:
    """Added and removed regions together (by address, or largest first by `sort`), then
    the changed ones group by group, each group in the diff's order."""
    whole = [("+", r) for r in d.added] + [("-", r) for r in d.removed]
    order = _region_order(sort)
    whole.sort(key=lambda item: order(item[1]))
    rows = [_whole_row(sign, r, "added" if sign == "+" else "removed", color) for sign, r in whole]
    groups: dict[int, list[list[str]]] = {}
    for c in d.changed:
        group = _change_group(c)
        if group < 5 or with_pss_only:
            groups.setdefault(group, []).append(_changed_row(c, color))
    for group in sorted(groups):
        rows += groups[group]
    return rows


def _changed_row(c: RegionChange, color: bool) -> list[str]:
    a, b = c.before, c.after
    size = (
        human(b.size) if a.size == b.size else f"{signed_human(b.size - a.size)} -> {human(b.size)}"
    )
    rss = human(b.rss)
    if a.rss != b.rss and a.rss is not None and b.rss is not None:
        rss = f"{signed_human(b.rss - a.rss)} -> {human(b.rss)}"
    perms = visible(b.perms if a.perms == b.perms else f"{a.perms}->{b.perms}")
    return [
        "~",
        paint(visible(b.kind), b.kind, color),
        f"{b.start:x}-{b.end:x}",
        size,
        perms,
        rss,
        display_path(b),
        ",".join(c.changes),
    ]


def diff_table(d: Diff, style: str, color: bool, all_regions: bool, sort: str = "address") -> str:
    parts = [diff_heading(d), "", _libraries_block(d), "", movements_table(d, style, color)]
    callouts = callouts_block(d, color)
    if callouts:
        parts += ["", callouts]
    rows = _detail_rows(d, color, all_regions, sort)
    drift = pss_only(d)
    count = f"regions: {len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed"
    if drift:
        count += f" ({len(drift)} only in pss)"
    parts += ["", count]
    if rows:
        shown = rows if all_regions else rows[:REGION_DETAIL_LIMIT]
        parts.append(
            table(
                shown,
                ["", "kind", "start-end", "size", "perms", "rss", "path", "changes"],
                style,
                ("left", "left", "left", "left", "left", "left", "left", "left"),
            )
        )
        if len(shown) < len(rows):
            parts.append(f"... {len(rows) - len(shown)} more (--regions shows them all)")
    if drift and not all_regions:
        total = sum((c.after.pss or 0) - (c.before.pss or 0) for c in drift)
        parts.append(
            f"~ {plural(len(drift), 'region')} changed only in pss, "
            f"{signed_human(total)} in all (--regions lists them)"
        )
    return "\n".join(parts)


# --- replay ----------------------------------------------------------------------------

REPLAY_HEADERS = [
    "id",
    "taken at",
    "regions",
    "virtual",
    "rss",
    "change",
    "rss change",
    "libraries",
    "heap",
    "stack",
    "most changed",
]


def _by_resident_change(item: tuple[str, Movement]) -> tuple[int, int]:
    delta = item[1].delta
    return (-abs(delta.rss or 0), -abs(delta.size))


def _most_changed(d: Diff) -> str:
    """The kind whose resident size moved most: what memory growth is. An address-space
    reservation (a malloc arena's guard, 64 MiB of nothing) moves the size, not the
    memory. Without smaps on either side, the kind whose size moved most."""
    movers = [(k, m) for k, m in d.kinds.items() if m.moved]
    if not movers:
        return ""
    if any(m.delta.rss for _, m in movers):
        kind, m = sorted(movers, key=_by_resident_change)[0]
        return f"{visible(kind)} {signed_human(m.delta.rss)} rss"
    kind, m = sorted(movers, key=_by_change)[0]
    return f"{visible(kind)} {signed_human(m.delta.size)}"


def replay_rows(steps: Sequence[tuple[Snapshot, Diff | None]]) -> list[list[str]]:
    rows = []
    for snap, d in steps:
        t = snap.totals
        row = [str(snap.id), local_time(snap.taken_at), str(t.regions), human(t.size), human(t.rss)]
        if d is None:
            row += ["", "", "", "", "", "(first)"]
        else:
            libs = " ".join(
                [
                    f"+{len(d.loaded)}" if d.loaded else "",
                    f"-{len(d.unloaded)}" if d.unloaded else "",
                ]
            ).strip()
            row += [
                signed_human(d.totals.delta.size),
                signed_human(d.totals.delta.rss),
                libs,
                signed_human(d.heap.delta.size) if d.heap else "",
                signed_human(d.stack.delta.size) if d.stack else "",
                _most_changed(d),
            ]
        rows.append(row)
    return rows


def replay_table(
    steps: Sequence[tuple[Snapshot, Diff | None]], style: str, color: bool = False
) -> str:
    first = steps[0][0]
    head = f"replay of {_who(first)}: {plural(len(steps), 'snapshot')}"
    body = table(
        replay_rows(steps),
        REPLAY_HEADERS,
        style,
        (
            "right",
            "left",
            "right",
            "right",
            "right",
            "right",
            "right",
            "left",
            "right",
            "right",
            "left",
        ),
    )
    notes: list[str] = []
    for snap, d in steps:
        if d is None:
            continue
        lines = _library_lines(d) + callouts_block(d, color).splitlines()
        notes.extend(f"  {snap.id}: {line}" for line in lines)
    text = head + "\n\n" + body
    if notes:
        text += "\n\nlibraries and executable memory:\n" + "\n".join(notes)
    return text


def replay_json(steps: Sequence[tuple[Snapshot, Diff | None]]) -> dict[str, Any]:
    return {
        "steps": [
            {"snapshot": snapshot_json(s), "diff": None if d is None else diff_json(d)}
            for s, d in steps
        ]
    }
