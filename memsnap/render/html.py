"""Self-contained HTML pages of a snapshot, a diff and a replay. Pure.

Each page is one file: styles, scripts and data inline, nothing fetched, so it opens from
file:// on a machine with no network and travels as one attachment in a bug report. The
pages are Jinja2 templates (memsnap/render/templates/) with autoescaping on; the data a page's
script draws from is one JSON document inside a `<script type="application/json">`,
written by Jinja2's `tojson`, which escapes `<`, `>`, `&` and `'`: a path holding
`</script>` cannot end the block. Every text from a process or a database (paths,
commands, labels, hosts) has its control characters made visible and its undecodable
bytes spelled `\\xNN` before it reaches a page.

Regions travel as compact rows (see `REGION_FIELDS`) with their paths interned, so a
60,000-region layout stays a few megabytes. A replay embeds change-only data: each
distinct region version once, with the first and last step it was seen in, never a copy
of every step's layout.

Jinja2 is imported here, and this module only where html is asked for: the other
commands' start-up does not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from memsnap import names
from memsnap.diff import Diff, Movement
from memsnap.model import KINDS, Region, Snapshot, Totals, columns_of, totals_by_kind
from memsnap.render.snapshot import KIND_COLORS, hexaddr, local_time
from memsnap.units import human, signed_human

if TYPE_CHECKING:
    from jinja2 import Environment

# The columns of a region row in a page's data, in order (the scripts read them by
# position: a name per row for 60,000 rows would double the page).
REGION_FIELDS = (
    "start",
    "end",
    "size",
    "perms",
    "offset",
    "dev",
    "inode",
    "path",
    "deleted",
    "kind",
    "rss",
    "pss",
    "swap",
    "shared_clean",
    "shared_dirty",
    "private_clean",
    "private_dirty",
)

# The terminal's ANSI colours as CSS, so a kind looks the same on a page as in a table
# (xterm's default palette; bold brightens, as most terminals draw it).
_ANSI_NORMAL = {
    30: "#4d4d4d",
    31: "#cd3131",
    32: "#0dbc79",
    33: "#c8b512",
    34: "#2472c8",
    35: "#bc3fbc",
    36: "#11a8cd",
    37: "#b5b5b5",
}
_ANSI_BRIGHT = {
    30: "#767676",
    31: "#f14c4c",
    32: "#23d18b",
    33: "#f5f543",
    34: "#3b8eea",
    35: "#d670d6",
    36: "#29b8db",
    37: "#e5e5e5",
}
_DIM = "#6e6e6e"
UNKNOWN_KIND_COLOR = "#9e9e9e"

# Kinds whose share of size, RSS and PSS is each under this fraction are folded into one
# "other" bar of the summary.
FOLD_BELOW = 0.01


@lru_cache(maxsize=8192)
def visible(text: str | None) -> str:
    """What a page shows of a name from a process or a database: `names.visible` (control
    characters and raw bytes as `\\xNN`, as every text output shows them); "" for None."""
    return "" if text is None else names.visible(text)


def css_color(ansi: str) -> str:
    """The CSS colour of an ANSI SGR code as KIND_COLORS spells it (`1;31`, `2`, `95`)."""
    parts = [int(p) for p in ansi.split(";") if p.isdigit()]
    bold = 1 in parts
    for p in parts:
        if 30 <= p <= 37:
            return (_ANSI_BRIGHT if bold else _ANSI_NORMAL)[p]
        if 90 <= p <= 97:
            return _ANSI_BRIGHT[p - 60]
    return _DIM if 2 in parts else UNKNOWN_KIND_COLOR


def dim(color: str, share: float = 0.28, ground: int = 0x10) -> str:
    """A colour mixed into the page's dark ground: a region's part that is not resident."""
    channels = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c * share + ground * (1 - share)):02x}" for c in channels)


KIND_CSS: dict[str, str] = {kind: css_color(code) for kind, code in KIND_COLORS.items()}


# --- data -----------------------------------------------------------------------------


class _Table:
    """Interned strings (paths, kinds) of one page: each written once, rows hold indexes."""

    def __init__(self, first: Sequence[str] = ()) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}
        for item in first:
            self.add(item)

    def add(self, text: str) -> int:
        i = self.index.get(text)
        if i is None:
            i = self.index[text] = len(self.items)
            self.items.append(text)
        return i


class _Page:
    """What the regions of one page share: the interned paths and kinds."""

    def __init__(self) -> None:
        self.paths = _Table()
        self.kinds = _Table(KINDS)

    def row(self, r: Region) -> list[Any]:
        path = -1 if r.path is None else self.paths.add(r.path)
        return [
            hexaddr(r.start),
            hexaddr(r.end),
            r.end - r.start,
            visible(r.perms),
            r.offset,
            visible(r.dev),
            r.inode,
            path,
            1 if r.deleted else 0,
            self.kinds.add(r.kind),
            r.rss,
            r.pss,
            r.swap,
            r.shared_clean,
            r.shared_dirty,
            r.private_clean,
            r.private_dirty,
        ]

    def rows(self, regions: Sequence[Region]) -> list[list[Any]]:
        return [self.row(r) for r in regions]

    def data(self) -> dict[str, Any]:
        # A path is shown as the kernel prints it (a newline as \012), then made visible.
        paths = [visible(p.replace("\n", "\\012")) for p in self.paths.items]
        return {
            "fields": list(REGION_FIELDS),
            "paths": paths,
            "kinds": [visible(k) for k in self.kinds.items],
        }

    def kind_styles(self) -> list[tuple[int, str, str]]:
        """(kind index, CSS colour, its dim shade) for every kind the page knows."""
        out = []
        for i, k in enumerate(self.kinds.items):
            color = KIND_CSS.get(k, UNKNOWN_KIND_COLOR)
            out.append((i, color, dim(color)))
        return out


def snapshot_data(s: Snapshot) -> dict[str, Any]:
    t = s.totals
    return {
        "id": s.id,
        "taken_at": s.taken_at.isoformat(),
        "local_time": local_time(s.taken_at),
        "pid": s.pid,
        "host": visible(s.host),
        "command": visible(s.command),
        "cmdline": [visible(a) for a in s.cmdline],
        "exe": visible(s.exe) if s.exe is not None else None,
        "label": visible(s.label) if s.label is not None else None,
        "page_size": s.page_size,
        "has_smaps": s.has_smaps,
        "totals": {"regions": t.regions, "size": t.size, "rss": t.rss, "pss": t.pss},
    }


def summary_bars(regions: Sequence[Region]) -> list[dict[str, Any]]:
    """The per-kind summary beside the map: one bar each for size, RSS and PSS as a share
    of the whole; kinds under 1% of every measure are folded into "other"."""
    mapped = [r for r in regions if r.kind != "gap"]
    per_kind = totals_by_kind(columns_of(mapped), [r.kind for r in mapped])
    measures = ("size", "rss", "pss")
    whole = {m: sum(getattr(t, m) or 0 for t in per_kind.values()) for m in measures}

    def share(t: Totals, m: str) -> float:
        return (getattr(t, m) or 0) / whole[m] if whole[m] else 0.0

    kept: list[tuple[str, Totals, list[str]]] = []
    folded: list[tuple[str, Totals]] = []
    ordered = [k for k in KINDS if k in per_kind] + sorted(set(per_kind) - set(KINDS))
    for kind in ordered:
        t = per_kind[kind]
        if kind == "other" or all(share(t, m) < FOLD_BELOW for m in measures):
            folded.append((kind, t))
        else:
            kept.append((kind, t, [kind]))
    if folded:
        parts = [t for _, t in folded]
        total = Totals(
            regions=sum(t.regions for t in parts),
            size=sum(t.size for t in parts),
            rss=_sum_known(t.rss for t in parts),
            pss=_sum_known(t.pss for t in parts),
        )
        kept.append(("other", total, [k for k, _ in folded]))
    bars = []
    for kind, t, members in kept:
        bar: dict[str, Any] = {
            "kind": visible(kind),
            "color": KIND_CSS.get(kind, UNKNOWN_KIND_COLOR),
            "members": ", ".join(visible(m) for m in members),
            "regions": t.regions,
        }
        for m in measures:
            value = getattr(t, m)
            bar[m] = {
                "percent": round(100 * share(t, m), 2),
                "text": human(value),
            }
        bars.append(bar)
    return bars


def _sum_known(values: Any) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _in_order(regions: Sequence[Region]) -> list[Region]:
    """Regions in address order (a `--top-down` caller may hand them reversed)."""
    return sorted(regions, key=lambda r: (r.start, r.end))


# --- rendering --------------------------------------------------------------------------

_ENV: Environment | None = None
STATIC = ("page.css", "map.js")


def _environment() -> Environment:
    global _ENV
    if _ENV is None:
        from jinja2 import Environment, PackageLoader, StrictUndefined

        env = Environment(
            loader=PackageLoader("memsnap.render", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Compact data; `tojson` still escapes <, >, & and ' inside it.
        env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "sort_keys": False}
        env.filters["human"] = human
        _ENV = env
    return _ENV


def _static() -> dict[str, Any]:
    """The page's own styles and scripts, inlined verbatim (they are memsnap's code, not
    data; read as files so Jinja2 never interprets their braces)."""
    from markupsafe import Markup

    folder = resources.files("memsnap.render") / "templates"
    return {
        name.replace(".", "_"): Markup(folder.joinpath(name).read_text(encoding="utf-8"))
        for name in STATIC
    }


def _render(template: str, **context: Any) -> str:
    env = _environment()
    return env.get_template(template).render(**_static(), **context)


def show_page(snapshot: Snapshot, regions: Sequence[Region], top_down: bool = False) -> str:
    """The address space of one snapshot: map, per-kind summary, regions table."""
    page = _Page()
    regions = [r for r in regions if r.kind != "gap"]  # the map draws the holes itself
    rows = page.rows(_in_order(regions))
    data = {
        "page": "show",
        "snapshot": snapshot_data(snapshot),
        "top_down": top_down,
        **page.data(),
        "maps": [{"title": "", "regions": rows, "marks": None}],
    }
    return _render(
        "show.html",
        title=f"memsnap: snapshot {snapshot.id}: pid {snapshot.pid} ({visible(snapshot.command)})",
        snapshot=snapshot_data(snapshot),
        bars=summary_bars(regions),
        marks=False,
        kind_styles=page.kind_styles(),
        data=data,
    )


# Marks of a diff's map, as the scripts and tests read them.
ADDED, REMOVED, CHANGED = "added", "removed", "changed"


def _movement(name: str, m: Movement | None) -> dict[str, Any] | None:
    if m is None:
        return None
    d = m.delta

    def side(a: Any, attr: str) -> str:
        return "-" if a is None else human(getattr(a, attr))

    return {
        "name": visible(name),
        "color": KIND_CSS.get(name, UNKNOWN_KIND_COLOR),
        "size_before": side(m.before, "size"),
        "size_after": side(m.after, "size"),
        "size_delta": signed_human(d.size),
        "rss_before": side(m.before, "rss"),
        "rss_after": side(m.after, "rss"),
        "rss_delta": signed_human(d.rss),
        "grew": d.size > 0 or (d.rss or 0) > 0,
        "shrank": d.size < 0 or (d.size == 0 and (d.rss or 0) < 0),
    }


def _by_change(item: tuple[str, Movement]) -> tuple[int, int]:
    delta = item[1].delta
    return (-abs(delta.size), -abs(delta.rss or 0))


def diff_summary(d: Diff) -> dict[str, Any]:
    """The summary above a diff's map: libraries, heap and stack, per-kind deltas sorted
    by the size of the change, and writable-and-executable memory that appeared."""
    kinds = [_movement(k, m) for k, m in sorted(d.kinds.items(), key=_by_change) if m.moved]
    return {
        "loaded": [visible(p) for p in d.loaded],
        "unloaded": [visible(p) for p in d.unloaded],
        "heap": _movement("heap", d.heap),
        "stack": _movement("stack", d.stack),
        "kinds": kinds,
        "totals": _movement("total", d.totals),
        "counts": {ADDED: len(d.added), REMOVED: len(d.removed), CHANGED: len(d.changed)},
        "wx": [
            f"{hexaddr(r.start)}-{hexaddr(r.end)} {visible(r.perms)} {visible(r.kind)} "
            f"{human(r.size)} {visible(r.path)}".rstrip()
            for r in d.writable_executable
        ],
    }


def _marked_map(
    page: _Page,
    title: str,
    layout: Sequence[Region],
    marks_by_start: dict[int, tuple[str, list[str]]],
    ghosts: Sequence[Region] = (),
) -> dict[str, Any]:
    """One map of a diff: a layout with some regions marked, and removed regions (ghosts)
    drawn where they were."""
    items = [(r, False) for r in layout] + [(r, True) for r in ghosts]
    # A ghost sorts before a live region at the same address: it was there first.
    items.sort(key=lambda item: (item[0].start, not item[1], item[0].end))
    rows: list[list[Any]] = []
    marks: list[str] = []
    changes: list[list[str]] = []
    for r, ghost in items:
        rows.append(page.row(r))
        if ghost:
            marks.append(REMOVED)
            changes.append([])
        else:
            mark, what = marks_by_start.get(r.start, ("", []))
            marks.append(mark)
            changes.append(what)
    return {"title": title, "regions": rows, "marks": marks, "changes": changes}


def diff_maps(
    page: _Page, d: Diff, before: Sequence[Region], after: Sequence[Region]
) -> list[dict[str, Any]]:
    """The maps of a diff: one (the later layout with removed regions as ghosts) for two
    snapshots of one process; the two processes side by side for `identity`."""
    if d.match == "address":
        marks: dict[int, tuple[str, list[str]]] = {r.start: (ADDED, []) for r in d.added}
        marks.update({c.after.start: (CHANGED, list(c.changes)) for c in d.changed})
        return [_marked_map(page, "", after, marks, d.removed)]
    left: dict[int, tuple[str, list[str]]] = {r.start: (REMOVED, []) for r in d.removed}
    left.update({c.before.start: (CHANGED, list(c.changes)) for c in d.changed})
    right: dict[int, tuple[str, list[str]]] = {r.start: (ADDED, []) for r in d.added}
    right.update({c.after.start: (CHANGED, list(c.changes)) for c in d.changed})
    return [
        _marked_map(page, _side_title(d.before), before, left),
        _marked_map(page, _side_title(d.after), after, right),
    ]


def _side_title(s: Snapshot) -> str:
    return f"snapshot {s.id}: pid {s.pid} ({visible(s.command)}) on {visible(s.host)}"


def diff_page(d: Diff, before: Sequence[Region], after: Sequence[Region]) -> str:
    """A diff: its summary above, then the map(s) with added, removed and changed regions
    each marked their own way."""
    page = _Page()
    maps = diff_maps(page, d, _in_order(before), _in_order(after))
    data = {
        "page": "diff",
        "match": d.match,
        "from": snapshot_data(d.before),
        "to": snapshot_data(d.after),
        "top_down": False,
        **page.data(),
        "maps": maps,
    }
    return _render(
        "diff.html",
        title=f"memsnap: diff {d.before.id} -> {d.after.id}",
        before=snapshot_data(d.before),
        after=snapshot_data(d.after),
        match=d.match,
        summary=diff_summary(d),
        kind_styles=page.kind_styles(),
        data=data,
    )


def replay_rows(
    page: _Page, first_layout: Sequence[Region], steps: Sequence[tuple[Snapshot, Diff | None]]
) -> list[list[Any]]:
    """Each distinct region version of a history once: `[first step, last step or null,
    how it came ("" at the start, "a" added, "c" changed), how it went ("", "r" removed,
    "c" changed), changes, region row...]`."""
    versions: list[list[Any]] = []
    alive: dict[Region, list[int]] = {}
    by_start: dict[int, list[Region]] = {}

    def come(r: Region, step: int, how: str, changes: Sequence[str] = ()) -> None:
        alive.setdefault(r, []).append(len(versions))
        by_start.setdefault(r.start, []).append(r)
        versions.append([step, None, how, "", list(changes), r])

    def go(r: Region, step: int, how: str) -> None:
        key = r if alive.get(r) else _same_start(by_start, alive, r)
        if key is None:  # not in the layout as read: nothing to close
            return
        i = alive[key].pop()
        by_start[key.start].remove(key)
        versions[i][1] = step - 1
        versions[i][3] = how

    for r in first_layout:
        come(r, 0, "")
    for step, (_, d) in enumerate(steps):
        if d is None or step == 0:
            continue
        for r in d.removed:
            go(r, step, "r")
        for c in d.changed:
            go(c.before, step, "c")
        for c in d.changed:
            come(c.after, step, "c", c.changes)
        for r in d.added:
            come(r, step, "a")
    return [[*v[:5], *page.row(v[5])] for v in versions]


def _same_start(
    by_start: dict[int, list[Region]], alive: dict[Region, list[int]], r: Region
) -> Region | None:
    """The live region at r's address, when r itself (as the diff saw it) is not found."""
    for other in by_start.get(r.start, []):
        if alive.get(other):
            return other
    return None


def _chart_measure(steps: Sequence[tuple[Snapshot, Diff | None]]) -> str:
    return "rss" if any(s.has_smaps for s, _ in steps) else "size"


def replay_steps(
    page: _Page, steps: Sequence[tuple[Snapshot, Diff | None]], measure: str
) -> list[dict[str, Any]]:
    out = []
    for snap, d in steps:
        kinds = {str(page.kinds.add(k)): getattr(t, measure) or 0 for k, t in snap.kinds.items()}
        out.append(
            {
                "id": snap.id,
                "taken_at": snap.taken_at.isoformat(),
                "local_time": local_time(snap.taken_at),
                "t": snap.taken_at.timestamp(),
                "regions": snap.totals.regions,
                "size": snap.totals.size,
                "rss": snap.totals.rss,
                "total": getattr(snap.totals, measure) or 0,
                "kinds": kinds,
                "loaded": [] if d is None else [visible(p) for p in d.loaded],
                "unloaded": [] if d is None else [visible(p) for p in d.unloaded],
                "counts": None if d is None else [len(d.added), len(d.removed), len(d.changed)],
            }
        )
    return out


def replay_page(
    steps: Sequence[tuple[Snapshot, Diff | None]], first_layout: Sequence[Region]
) -> str:
    """A process's history: RSS over time stacked by kind with the total as a line,
    library markers, and any step's layout with its changes marked."""
    if not steps:
        raise ValueError("a replay has at least one step")
    page = _Page()
    measure = _chart_measure(steps)
    rows = replay_rows(page, _in_order(first_layout), steps)
    first = steps[0][0]
    data = {
        "page": "replay",
        "snapshot": snapshot_data(first),
        "measure": measure,
        "top_down": False,
        "steps": replay_steps(page, steps, measure),
        **page.data(),
        "versions": rows,
    }
    return _render(
        "replay.html",
        title=f"memsnap: replay of pid {first.pid} ({visible(first.command)})",
        snapshot=snapshot_data(first),
        count=len(steps),
        measure=measure,
        kind_styles=page.kind_styles(),
        data=data,
    )
