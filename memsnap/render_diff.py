"""Turning diffs and replays into text: the table a person reads, the JSON a script reads.

The table leads with what a person asks first: which libraries came and went, how the
heap and stack moved, which kinds grew most (sorted by the size of the change), what
became executable; then the region detail, cut to a screenful unless asked for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from memsnap.diff import Amount, Diff, Movement, RegionChange
from memsnap.model import Region, Snapshot
from memsnap.names import visible
from memsnap.render import (
    display_path,
    hexaddr,
    local_time,
    paint,
    region_json,
    snapshot_json,
)
from memsnap.table import table
from memsnap.units import human, signed_human

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
    return (
        f"diff {a.id} -> {b.id}: {who}\n"
        f"{local_time(a.taken_at)} -> {local_time(b.taken_at)} "
        f"({_elapsed(a.taken_at, b.taken_at)}); {how}"
    )


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
        paint(name, name, color),
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
    line = f"{hexaddr(r.start)}-{hexaddr(r.end)} {r.perms} {r.kind} {human(r.size)}"
    path = display_path(r)
    return f"{line} {path}" if path else line


def callouts_block(d: Diff) -> str:
    """The lines a security reviewer looks for first; each region is named once."""
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
                f"! made executable ({c.before.perms} -> {c.after.perms}): {_region_line(c.after)}"
            )
    return "\n".join(lines)


def _whole_row(sign: str, r: Region, what: str, color: bool) -> list[str]:
    """A region that was added or removed whole."""
    return [
        sign,
        paint(r.kind, r.kind, color),
        f"{r.start:x}-{r.end:x}",
        human(r.size),
        r.perms,
        human(r.rss),
        display_path(r),
        what,
    ]


def _detail_rows(d: Diff, color: bool) -> list[list[str]]:
    rows: list[tuple[int, list[str]]] = []
    rows += [(r.start, _whole_row("+", r, "added", color)) for r in d.added]
    rows += [(r.start, _whole_row("-", r, "removed", color)) for r in d.removed]
    for c in d.changed:
        rows.append((c.after.start, _changed_row(c, color)))
    rows.sort(key=lambda item: item[0])
    return [row for _, row in rows]


def _changed_row(c: RegionChange, color: bool) -> list[str]:
    a, b = c.before, c.after
    size = (
        human(b.size) if a.size == b.size else f"{signed_human(b.size - a.size)} -> {human(b.size)}"
    )
    rss = human(b.rss)
    if a.rss != b.rss and a.rss is not None and b.rss is not None:
        rss = f"{signed_human(b.rss - a.rss)} -> {human(b.rss)}"
    perms = b.perms if a.perms == b.perms else f"{a.perms}->{b.perms}"
    return [
        "~",
        paint(b.kind, b.kind, color),
        f"{b.start:x}-{b.end:x}",
        size,
        perms,
        rss,
        display_path(b),
        ",".join(c.changes),
    ]


def diff_table(d: Diff, style: str, color: bool, all_regions: bool) -> str:
    parts = [diff_heading(d), "", _libraries_block(d), "", movements_table(d, style, color)]
    callouts = callouts_block(d)
    if callouts:
        parts += ["", callouts]
    rows = _detail_rows(d, color)
    count = f"regions: {len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed"
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


def _most_changed(d: Diff) -> str:
    movers = [(k, m) for k, m in d.kinds.items() if m.moved]
    if not movers:
        return ""
    kind, m = sorted(movers, key=_by_change)[0]
    delta = m.delta.size if m.delta.size else (m.delta.rss or 0)
    return f"{kind} {signed_human(delta)}"


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


def replay_table(steps: Sequence[tuple[Snapshot, Diff | None]], style: str) -> str:
    first = steps[0][0]
    head = f"replay of {_who(first)}: {len(steps)} snapshots"
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
        lines = _library_lines(d) + callouts_block(d).splitlines()
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
