"""`show --map`: a snapshot's address space as one strip across the terminal. Pure.

Lowest address on the left. A 64-bit address space is almost all hole, so the largest
holes become fixed-width breaks labelled with their size (as many as fit in half the
width; smaller holes are closed up), and the regions between share the rest of the width
by the logarithm of their size, as the html map draws them: a guard page keeps a column
beside a heap. Where more regions than columns meet, a column shows the region at its
middle. On a terminal every column is a block in its kind's colour; piped or under
NO_COLOR each kind is drawn with its own letter (`LETTERS`), so the map reads without
colour.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from itertools import accumulate, pairwise

from memsnap.model import KINDS, Region, Snapshot
from memsnap.render.snapshot import hexaddr, paint, snapshot_heading

# One letter per kind for a map without colour (documented in docs/interface.md):
# capitals for the program and the process's own areas, lower case for libraries.
LETTERS: dict[str, str] = {
    "text": "T",
    "rodata": "R",
    "data": "D",
    "bss": "B",
    "lib-text": "t",
    "lib-rodata": "r",
    "lib-data": "d",
    "lib-bss": "b",
    "heap": "H",
    "stack": "S",
    "thread-stack": "s",
    "anon": "a",
    "shmem": "m",
    "file": "f",
    "guard": "-",
    "vdso": "V",
    "vvar": "v",
    "vsyscall": "Y",
    "other": "o",
}
UNKNOWN_LETTER = "?"
BLOCK = "█"
MIN_WIDTH = 20
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def approx(n: int) -> str:
    """A hole's size for a break's label: `≈93 TiB`, `≈1.5 GiB`, `≈8 KiB`."""
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    number = f"{value:.0f}" if value >= 10 or unit == 0 else f"{value:.1f}"
    return f"≈{number} {_UNITS[unit]}"


BREAK_EDGE = "\u2571"  # a light diagonal: the strip is cut here


def break_text(size: int) -> str:
    return f"{BREAK_EDGE}{approx(size)}{BREAK_EDGE}"


def weight(region: Region, page_size: int) -> float:
    """A region's share of the width: grows with log2 of its pages."""
    return 1.0 + math.log2(max(1, (region.end - region.start) // max(1, page_size)))


def _holes(regions: Sequence[Region]) -> list[tuple[int, int]]:
    """(index of the region after the hole, hole size), in address order."""
    holes = []
    reach = regions[0].end
    for i in range(1, len(regions)):
        r = regions[i]
        if r.start > reach:
            holes.append((i, r.start - reach))
        reach = max(reach, r.end)
    return holes


def _shares(weights: Sequence[float], columns: int) -> list[int]:
    """Columns per run, proportional to its weight, at least one each."""
    total = sum(weights) or 1.0
    spare = columns - len(weights)
    raw = [spare * w / total for w in weights]
    out = [1 + int(x) for x in raw]
    left = columns - sum(out)
    by_fraction = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    for i in by_fraction[:left]:
        out[i] += 1
    return out


def _run_columns(run: Sequence[Region], columns: int, page_size: int) -> list[str]:
    """The kind drawn in each of `columns` columns for one run of regions."""
    ends = list(accumulate(weight(r, page_size) for r in run))
    total = ends[-1]
    kinds = []
    for j in range(columns):
        middle = (j + 0.5) * total / columns
        i = min(bisect.bisect_left(ends, middle), len(run) - 1)
        kinds.append(run[i].kind)
    return kinds


def strip(regions: Sequence[Region], width: int, page_size: int) -> list[str | tuple[str, int]]:
    """The strip as cells: a kind per column, or (break text, hole size) for a break."""
    regions = sorted((r for r in regions if r.kind != "gap"), key=lambda r: (r.start, r.end))
    if not regions:
        return []
    width = max(width, MIN_WIDTH)
    holes = _holes(regions)
    chosen: list[tuple[int, int]] = []
    used = 0
    for i, size in sorted(holes, key=lambda h: h[1], reverse=True):
        cost = len(break_text(size))
        if used + cost > width // 2:
            continue
        chosen.append((i, size))
        used += cost
    chosen.sort()
    cuts = [0, *(i for i, _ in chosen), len(regions)]
    runs = [regions[a:b] for a, b in pairwise(cuts)]
    weights = [sum(weight(r, page_size) for r in run) for run in runs]
    shares = _shares(weights, max(len(runs), width - used))
    cells: list[str | tuple[str, int]] = []
    for k, run in enumerate(runs):
        if k > 0:
            size = chosen[k - 1][1]
            cells.append((break_text(size), size))
        cells.extend(_run_columns(run, shares[k], page_size))
    return cells


def _draw(cells: Sequence[str | tuple[str, int]], color: bool) -> str:
    out: list[str] = []
    k = 0
    while k < len(cells):
        cell = cells[k]
        if isinstance(cell, tuple):
            out.append(paint(cell[0], "gap", color))
            k += 1
            continue
        n = k
        while n < len(cells) and cells[n] == cell:
            n += 1
        count = n - k
        if color:
            out.append(paint(BLOCK * count, cell, True))
        else:
            out.append(LETTERS.get(cell, UNKNOWN_LETTER) * count)
        k = n
    return "".join(out)


def legend(regions: Sequence[Region], color: bool, width: int) -> str:
    """The kinds present, each with its block or letter, wrapped to the width."""
    present = {r.kind for r in regions if r.kind != "gap"}
    ordered = [k for k in KINDS if k in present] + sorted(present - set(KINDS))
    items = []
    for kind in ordered:
        sample = paint(BLOCK, kind, True) if color else LETTERS.get(kind, UNKNOWN_LETTER)
        items.append((f"{sample} {kind}", len(kind) + 2))
    lines, line, used = [], "", 0
    for text, length in items:
        if line and used + 2 + length > width:
            lines.append(line)
            line, used = "", 0
        line = f"{line}  {text}" if line else text
        used += (2 if used else 0) + length
    if line:
        lines.append(line)
    return "\n".join(lines)


def map_text(snapshot: Snapshot, regions: Sequence[Region], width: int, color: bool) -> str:
    """The heading, the strip, its lowest and highest address, and the legend."""
    width = max(width, MIN_WIDTH)
    mapped = [r for r in regions if r.kind != "gap"]
    head = snapshot_heading(snapshot)
    if not mapped:
        return head + "(no regions)"
    cells = strip(mapped, width, snapshot.page_size)
    low = hexaddr(min(r.start for r in mapped))
    high = hexaddr(max(r.end for r in mapped))
    axis = low + " " * max(1, width - len(low) - len(high)) + high
    return "\n".join([head, _draw(cells, color), axis, "", legend(mapped, color, width)])
