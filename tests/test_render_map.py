"""`show --map`: the terminal strip, on real captures and plain values."""

from __future__ import annotations

import re

import pytest
from test_render_html import LOCAL_SMAPS, captured, region, snapshot_of

from conftest import Cli, fixture_text
from memsnap.classify import classify
from memsnap.model import KINDS
from memsnap.parse import parse_text
from memsnap.render import termmap as render_map
from memsnap.render.snapshot import KIND_COLORS

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_line(text: str) -> str:
    """The strip: the line after the heading's blank line."""
    lines = text.splitlines()
    return lines[lines.index("") + 1]


def test_every_kind_has_its_own_letter() -> None:
    kinds = [k for k in KINDS if k != "gap"]
    assert set(render_map.LETTERS) == set(kinds)
    assert len(set(render_map.LETTERS.values())) == len(kinds)


@pytest.mark.parametrize("width", [20, 47, 80, 200])
def test_the_strip_is_exactly_as_wide_as_asked(width: int) -> None:
    regions = captured()
    text = render_map.map_text(snapshot_of(regions), regions, width, color=False)
    assert len(strip_line(text)) == width
    colored = render_map.map_text(snapshot_of(regions), regions, width, color=True)
    assert len(ANSI.sub("", strip_line(colored))) == width


def test_gaps_are_labelled_breaks_and_the_largest_is_kept() -> None:
    regions = captured()
    line = strip_line(render_map.map_text(snapshot_of(regions), regions, 100, color=False))
    # [stack] .. [vsyscall]: the hole that takes up most of a 64-bit space.
    assert "\u2571≈16 EiB\u2571" in line
    labels = re.findall(r"\u2571≈([0-9.]+ [KMGTPE]?i?B)\u2571", line)
    assert len(labels) >= 3


def test_without_colour_each_kind_is_its_letter_and_the_legend_says_which() -> None:
    regions = captured()
    text = render_map.map_text(snapshot_of(regions), regions, 120, color=False)
    assert "\x1b" not in text
    present = {r.kind for r in regions}
    legend = "\n".join(text.splitlines()[text.splitlines().index("", 3) + 1 :])
    for kind in KINDS:
        entry = f"{render_map.LETTERS.get(kind, '?')} {kind}"
        assert (re.search(rf"(^|  ){re.escape(entry)}($|  )", legend, re.M) is not None) == (
            kind in present
        ), kind
    strip = strip_line(text)
    assert "H" in strip and "S" in strip  # the heap and the stack are wide enough to show


def test_with_colour_blocks_take_their_kinds_colour() -> None:
    regions = [region(0x10000, 256, "heap", "[heap]"), region(0x7FFF0000, 32, "stack", "[stack]")]
    text = render_map.map_text(snapshot_of(regions), regions, 40, color=True)
    line = strip_line(text)
    assert f"\x1b[{KIND_COLORS['heap']}m{render_map.BLOCK}" in line
    assert f"\x1b[{KIND_COLORS['stack']}m{render_map.BLOCK}" in line
    assert "H" not in ANSI.sub("", line)


def test_sixty_thousand_regions_still_fit_the_width() -> None:
    regions = [
        region(0x7F0000000000 + i * 0x2000, 1, "anon" if i % 2 else "guard") for i in range(60000)
    ]
    line = strip_line(render_map.map_text(snapshot_of(regions), regions, 80, color=False))
    assert len(line) == 80 and set(line) <= {"a", "-"} | set("\u2571≈0123456789. KiB")


def test_a_32_bit_capture_draws_too() -> None:
    mappings = parse_text(fixture_text("hs_err-jvm7-i386-32bit-jboss-2441-maps.txt")).mappings
    regions = [m._replace(kind=k) for m, k in zip(mappings, classify(mappings, None), strict=True)]
    text = render_map.map_text(snapshot_of(regions), regions, 90, color=False)
    assert len(strip_line(text)) == 90


def test_show_map_through_the_cli(sqlite_cli: Cli) -> None:
    done = sqlite_cli(
        "record", "--from-file", "-", "--pid", "4242", input=fixture_text(LOCAL_SMAPS)
    )
    assert done.exit_code == 0, done.stderr
    shown = sqlite_cli("show", "1", "--map")  # NO_COLOR and not a terminal: letters
    assert shown.exit_code == 0, shown.stderr
    assert "\x1b" not in shown.stdout
    assert len(strip_line(shown.stdout)) == 200  # the Cli fixture's COLUMNS
    assert "H heap" in shown.stdout
    refused = sqlite_cli("show", "1", "--map", "--format", "json")
    assert refused.exit_code == 2 and "--map" in refused.stderr
