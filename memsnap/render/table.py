"""Tables through tabulate, fast enough for 65,530 rows.

tabulate infers a type for every cell, which costs seconds on a 60,000-region layout.
For the plain styles (`simple`, `plain`) the body is laid out here instead: tabulate
still renders the header and rule, from one synthetic row holding the widest cell of
each column (so the widths are exactly those of a full render), and every body row is
padded to those widths the way tabulate pads it. A test checks the result is identical
to tabulate's own. Every other style goes through tabulate whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat

from tabulate import tabulate

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAST_STYLES = {"simple": 2, "plain": 1}  # style -> lines tabulate puts above the rows


def _width(cell: str) -> int:
    return len(_ANSI.sub("", cell)) if "\x1b" in cell else len(cell)


def _has_ansi(column: Sequence[str]) -> bool:
    return "\x1b" in "".join(column)


def _widest(column: Sequence[str]) -> str:
    if _has_ansi(column):
        return max(column, key=_width)
    lengths = list(map(len, column))
    return column[lengths.index(max(lengths))]


def _pad(column: Sequence[str], width: int, align: str) -> list[str]:
    """Every cell of a column padded to `width` visible characters, tabulate's way."""
    if _has_ansi(column):
        return [
            (" " * (width - _width(c)) + c) if align == "right" else (c + " " * (width - _width(c)))
            for c in column
        ]
    pad = str.rjust if align == "right" else str.ljust
    return list(map(pad, column, repeat(width)))


def table(
    rows: Sequence[Sequence[str]], headers: Sequence[str], style: str, colalign: Sequence[str]
) -> str:
    """`tabulate(rows, headers, tablefmt=style, colalign=..., disable_numparse=True)`."""
    if style not in _FAST_STYLES or len(rows) < 2:
        return tabulate(
            rows,
            headers=list(headers),
            tablefmt=style,
            disable_numparse=True,
            colalign=list(colalign),
        )
    return table_of_columns(list(zip(*rows, strict=True)), headers, style, colalign)


def table_of_columns(
    columns: Sequence[Sequence[str]], headers: Sequence[str], style: str, colalign: Sequence[str]
) -> str:
    """The same table, given column by column (cheaper for a caller that builds columns)."""
    head_lines = _FAST_STYLES.get(style)
    if head_lines is None or len(columns[0]) < 2:
        return table(list(zip(*columns, strict=True)), headers, style, colalign)
    widest = [_widest(column) for column in columns]
    sample = tabulate(
        [widest],
        headers=list(headers),
        tablefmt=style,
        disable_numparse=True,
        colalign=list(colalign),
    ).split("\n")
    # The widths tabulate chose: the header's own plus two, or the widest cell.
    widths = [max(_width(h) + 2, _width(w)) for h, w in zip(headers, widest, strict=True)]
    padded = [_pad(col, w, a) for col, w, a in zip(columns, widths, colalign, strict=True)]
    body = map(str.rstrip, map("  ".join, zip(*padded, strict=True)))
    return "\n".join([*sample[:head_lines], *body])


# For `render.stream`, which lays a table out a batch at a time with tabulate's widths.
FAST_STYLES = _FAST_STYLES
visible_width = _width
widest_cell = _widest
pad_column = _pad
