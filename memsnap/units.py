"""Sizes for people: 1024-based units, as the original table showed them. Pure."""

from __future__ import annotations

from functools import lru_cache

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_once(n: int | None) -> str:
    """A size in 1024-based units: `512 B`, `4.0 KiB`, `30.0 MiB`; `-` when unknown.

    `human` is the same, remembered: a table of 60,000 regions shows the same few sizes
    over and over. A watch's lines show each round's new sizes once and would only fill
    what `human` remembers (a watch runs for weeks): they take this one."""
    if n is None:
        return "-"
    value = float(abs(n))
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    sign = "-" if n < 0 else ""
    if unit == 0:
        return f"{sign}{int(value)} B"
    return f"{sign}{value:.1f} {_UNITS[unit]}"


human = lru_cache(maxsize=65536)(human_once)


def signed_human(n: int | None) -> str:
    """A change in size: `+30.0 MiB`, `-4.0 KiB`, `0 B`."""
    if n is None:
        return "-"
    return ("+" if n > 0 else "") + human(n)


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 snapshot`, `2 snapshots`; `words` where adding an s is wrong (`processes`)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"
