"""The html pages as text: escaping, self-containment, the summary, the replay's
change-only data. What a browser does with them is in test_browser.py."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import Cli, fixture_text
from memsnap.classify import classify
from memsnap.diff import Diff, diff_snapshots, libraries
from memsnap.model import (
    ProcessIdentity,
    Region,
    Snapshot,
    columns_of,
    combine,
    totals_by_kind,
)
from memsnap.parse import parse_text
from memsnap.render import html as render_html
from memsnap.render.snapshot import KIND_COLORS

LOCAL_SMAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-smaps.txt"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
DATA = re.compile(r'<script type="application/json" id="data">(.*?)</script>', re.S)


def snapshot_of(
    regions: list[Region], sid: int = 1, command: str = "demo", label: str | None = None
) -> Snapshot:
    """A snapshot of `regions`, its totals summed from them."""
    kinds = totals_by_kind(columns_of(regions), [r.kind for r in regions])
    return Snapshot(
        id=sid,
        process_id=1,
        seq=sid,
        taken_at=T0 + timedelta(seconds=sid),
        identity=ProcessIdentity("host", "boot", 4242, 1),
        command=command,
        cmdline=("./demo", "--flag"),
        exe="/tmp/demo",
        label=label,
        page_size=4096,
        kernel=None,
        source="file",
        has_smaps=True,
        totals=combine(kinds.values()),
        kinds=kinds,
    )


def captured() -> list[Region]:
    mappings = parse_text(fixture_text(LOCAL_SMAPS)).mappings
    return [m._replace(kind=k) for m, k in zip(mappings, classify(mappings, None), strict=True)]


def page_data(page: str) -> dict[str, object]:
    found = DATA.search(page)
    assert found is not None
    doc: dict[str, object] = json.loads(found.group(1))
    return doc


def region(
    start: int, pages: int, kind: str = "anon", path: str | None = None, perms: str = "rw-p"
) -> Region:
    """A region of `pages` pages, all of them resident."""
    return Region(
        start=start,
        end=start + pages * 4096,
        perms=perms,
        offset=0,
        dev="00:00",
        inode=0,
        path=path,
        rss=pages * 4096,
        pss=pages * 4096,
        swap=0,
        kind=kind,
    )


def test_hostile_names_cannot_leave_the_data_or_drive_anything() -> None:
    evil = "/tmp/</script><script>alert(1)</script>\x1b[31m&'\"<!--"
    regions = [*captured(), region(0x7F0000000000, 1, "file", evil)]
    snap = snapshot_of(regions, command="<b>x</b>\x1b]0;owned\x07", label="</title><i>")
    page = render_html.show_page(snap, regions)
    # Only memsnap's own two script blocks end: the path's </script> stayed inside the data.
    assert page.count("</script>") == 2
    assert "<script>alert" not in page and "<b>x</b>" not in page and "</title><i>" not in page
    assert "\x1b" not in page and "\x07" not in page
    assert "&lt;b&gt;x&lt;/b&gt;\\x1b]0;owned\\x07" in page  # escaped, and visible
    data = page_data(page)
    paths = data["paths"]
    assert isinstance(paths, list)
    assert "/tmp/</script><script>alert(1)</script>\\x1b[31m&'\"<!--" in paths


def test_undecodable_bytes_show_as_hex_not_replacement_characters() -> None:
    raw = b"/tmp/caf\xe9.so".decode("utf-8", "surrogateescape")
    regions = [region(0x10000, 1, "file", raw)]
    page = render_html.show_page(snapshot_of(regions), regions)
    page.encode("utf-8")  # a lone surrogate would fail here
    assert page_data(page)["paths"] == ["/tmp/caf\\xe9.so"]


def test_a_page_fetches_nothing() -> None:
    regions = captured()
    page = render_html.show_page(snapshot_of(regions), regions)
    lowered = page.lower()
    for needle in ("src=", "href=", "url(", "@import", "@font-face", "<link", "<iframe"):
        assert needle not in lowered, needle
    # The one address in it is the SVG namespace, a name and never fetched.
    assert set(re.findall(r"https?://[^\s\"')]+", page)) == {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in page  # and the browser is told to refuse any request


def test_kinds_take_the_terminals_colours() -> None:
    assert render_html.css_color("1;31") != render_html.css_color("31")  # text vs lib-text
    assert render_html.css_color("95") == render_html.css_color("1;35")
    assert render_html.css_color("2") == render_html.css_color("2")
    assert set(render_html.KIND_CSS) == set(KIND_COLORS)
    regions = captured()
    page = render_html.show_page(snapshot_of(regions), regions)
    kinds = page_data(page)["kinds"]
    assert isinstance(kinds, list)
    heap = kinds.index("heap")
    assert f".k{heap} {{ --c: {render_html.KIND_CSS['heap']}; --d: " in page


def test_summary_folds_kinds_under_one_percent_into_other() -> None:
    regions = [
        region(0x10000, 1000, "heap", "[heap]"),
        region(0x7F0000000000, 1, "vdso", "[vdso]"),
        region(0x7F0000100000, 2, "guard", perms="---p"),
        region(0x7FFF00000000, 100, "stack", "[stack]"),
    ]
    bars = render_html.summary_bars(regions)
    assert [b["kind"] for b in bars] == ["heap", "stack", "other"]
    assert bars[-1]["members"] == "guard, vdso" and bars[-1]["regions"] == 2
    assert bars[0]["size"]["percent"] > 90


def _history(steps: int, regions: int, seed: int = 7) -> tuple[list[Region], list[list[Region]]]:
    """A process's layouts: `regions` regions, a few of which change at every step."""
    rng = random.Random(seed)
    base = 0x7F0000000000
    layout = [
        region(
            base + i * 0x10000,
            1 + i % 4,
            "lib-text" if i % 5 == 0 else "anon",
            f"/usr/lib/lib{i % 40}.so" if i % 5 == 0 else None,
        )
        for i in range(regions)
    ]
    layouts = [layout]
    for _ in range(1, steps):
        layout = list(layout)
        for _ in range(3):
            i = rng.randrange(len(layout))
            r = layout[i]
            if rng.random() < 0.5:  # grows or shrinks in resident size
                layout[i] = r._replace(rss=rng.randrange(0, r.end - r.start + 1, 4096))
            else:  # replaced by a region elsewhere in its own 64 KiB slot
                slot = r.start - r.start % 0x10000
                moved = slot + 0x1000 * rng.choice(
                    [j for j in range(12) if slot + 0x1000 * j != r.start]
                )
                layout[i] = region(moved, 1 + rng.randrange(4), "anon")
        layout.sort(key=lambda r: r.start)
        layouts.append(layout)
    return layouts[0], layouts


def _steps(layouts: list[list[Region]]) -> list[tuple[Snapshot, Diff | None]]:
    snaps = [snapshot_of(lay, sid=i + 1) for i, lay in enumerate(layouts)]
    steps: list[tuple[Snapshot, Diff | None]] = [(snaps[0], None)]
    for k in range(1, len(layouts)):
        a, b = snaps[k - 1], snaps[k]
        before, after = set(layouts[k - 1]), set(layouts[k])
        d = diff_snapshots(
            a,
            b,
            sorted(before - after),
            sorted(after - before),
            "address",
            libraries(layouts[k - 1]),
            libraries(layouts[k]),
        )
        steps.append((b, d))
    return steps


def test_replay_data_rebuilds_every_steps_layout() -> None:
    first, layouts = _history(60, 80)
    page = render_html.replay_page(_steps(layouts), first)
    data = page_data(page)
    versions = data["versions"]
    assert isinstance(versions, list)
    for k, layout in enumerate(layouts):
        alive = [v for v in versions if v[0] <= k and (v[1] is None or v[1] >= k)]
        starts = sorted(int(v[5], 16) for v in alive)
        assert starts == [r.start for r in layout], k
        rss = {int(v[5], 16): v[5 + render_html.REGION_FIELDS.index("rss")] for v in alive}
        assert rss == {r.start: r.rss for r in layout}, k


def test_a_thousand_steps_of_five_hundred_regions_stay_under_three_megabytes() -> None:
    first, layouts = _history(1000, 500)
    page = render_html.replay_page(_steps(layouts), first)
    size = len(page.encode("utf-8"))
    assert size < 3 * 1024 * 1024, size
    steps = page_data(page)["steps"]
    assert isinstance(steps, list) and len(steps) == 1000


def test_diff_of_two_processes_draws_both_side_by_side() -> None:
    a = [region(0x10000, 4, "heap", "[heap]"), region(0x20000, 1, "lib-text", "/lib/a.so")]
    b = [region(0x90000, 8, "heap", "[heap]"), region(0xA0000, 1, "lib-text", "/lib/b.so")]
    sa = snapshot_of(a, 1)
    sb = replace(snapshot_of(b, 2), process_id=2)
    d = diff_snapshots(sa, sb, a, b, "identity", libraries(a), libraries(b))
    maps = page_data(render_html.diff_page(d, a, b))["maps"]
    assert isinstance(maps, list) and len(maps) == 2
    assert maps[0]["marks"] == ["changed", "removed"]
    assert maps[1]["marks"] == ["changed", "added"]


def test_jinja2_is_imported_only_when_a_page_is_asked_for(sqlite_cli: Cli, tmp_path: Path) -> None:
    imported = sqlite_cli(
        "record", "--from-file", "-", "--pid", "4242", input=fixture_text(LOCAL_SMAPS)
    )
    assert imported.exit_code == 0, imported.stderr
    probe = (
        "import sys\n"
        "from memsnap.cli import app\n"
        "sys.argv = ['memsnap', '--db', sys.argv[1], *sys.argv[2:]]\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "print('jinja2' in sys.modules, file=sys.stderr)\n"
    )

    def loads_jinja(*args: str) -> bool:
        done = subprocess.run(
            [sys.executable, "-c", probe, sqlite_cli.url, *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stderr.strip().splitlines()[-1] == "True"

    assert not loads_jinja("show", "1")
    assert not loads_jinja("list")
    assert loads_jinja("show", "1", "--format", "html", "-o", str(tmp_path / "p.html"))
