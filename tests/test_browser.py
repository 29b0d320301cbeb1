"""The html pages in a real headless browser, after their scripts ran.

Real processes are recorded through the CLI; each page is opened from file:// in the
system's chromium (Debian's `chromium`, driven by Playwright; `.ci/run` installs both),
and checked against the JSON documents of the same snapshots: one element per region,
a legend of exactly the kinds present, hover text, diff marks, one chart point per replay
step, no request but the page itself and no console error. Without a browser these tests
skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target, fixture_text
from memsnap.units import human

CHROMIUM = os.environ.get("MEMSNAP_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need playwright (pip install '.[test]')"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"browser tests need chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    why = _why_no_browser()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


@dataclass
class Opened:
    """A page after its scripts ran, with every request and console error it made."""

    page: Any
    url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def clean(self) -> None:
        assert self.requests == [self.url]
        assert self.errors == []


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    opened: list[Opened] = []

    def opener(path: Path) -> Opened:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        seen = Opened(page, path.as_uri())
        page.on("request", lambda r: seen.requests.append(r.url))
        page.on(
            "console",
            lambda m: seen.errors.append(m.text) if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: seen.errors.append(str(e)))
        page.goto(seen.url)
        page.wait_for_selector("body[data-ready]")
        opened.append(seen)
        return seen

    yield opener
    for o in opened:
        o.page.close()


def page_of(cli: Cli, tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    done = cli(*args, "--format", "html", "-o", str(out))
    assert done.exit_code == 0, done.stderr
    return out


def json_of(cli: Cli, *args: str) -> dict[str, Any]:
    done = cli(*args, "--format", "json")
    assert done.exit_code == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def record(cli: Cli, pid: int) -> str:
    done = cli("record", str(pid))
    assert done.exit_code == 0, done.stderr
    return done.stdout.split()[1].rstrip(":")


def legend(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#legend li", "els => els.map(e => e.dataset.kind)"))


def marked(page: Any, mark: str) -> list[str]:
    return sorted(
        page.eval_on_selector_all(f'.r[data-mark="{mark}"]', "els => els.map(e => e.dataset.start)")
    )


@pytest.mark.live
def test_show_page_draws_every_region_with_legend_and_hover(
    sqlite_cli: Cli, target: Target, tmp_path: Path, open_page: Any
) -> None:
    target.send("dlopen libz.so.1")
    target.send("heap 3000000")
    target.send("rwx")
    target.send("thread")
    sid = record(sqlite_cli, target.pid)
    doc = json_of(sqlite_cli, "show", sid)
    o = open_page(page_of(sqlite_cli, tmp_path, "show.html", "show", sid))
    regions = doc["regions"]
    assert o.page.locator(".r").count() == len(regions) == doc["snapshot"]["totals"]["regions"]
    kinds = {r["kind"] for r in regions}
    assert sorted(legend(o.page)) == sorted(kinds)
    assert len(legend(o.page)) == len(kinds)
    heap = next(r for r in regions if r["kind"] == "heap")
    o.page.hover(f'.r[data-start="{heap["start"]}"]')
    tip = o.page.text_content("#tip")
    assert heap["start"] in tip and human(heap["size"]) in tip
    assert heap["start"][2:] + "-" + heap["end"][2:] in tip  # the maps line
    # Writable and executable: marked by a pattern, on exactly those regions.
    wx = sorted(r["start"] for r in regions if "w" in r["perms"] and "x" in r["perms"])
    assert (
        wx
        and sorted(o.page.eval_on_selector_all(".r.wx", "e => e.map(x => x.dataset.start)")) == wx
    )

    # Bottom-up by default: the lowest address is drawn lowest; top-down flips it.
    def first_and_last_y() -> tuple[float, float]:
        ys = o.page.eval_on_selector_all(".r", "e => e.map(x => x.getBoundingClientRect().top)")
        return ys[0], ys[-1]

    low, high = first_and_last_y()
    assert low > high
    o.page.check("#topdown")
    low, high = first_and_last_y()
    assert low < high
    assert o.page.locator("#regions tbody tr").count() == len(regions)
    o.clean()


@pytest.mark.live
def test_diff_page_marks_exactly_the_added_removed_and_changed_regions(
    sqlite_cli: Cli, target: Target, tmp_path: Path, open_page: Any
) -> None:
    target.send("anon 1048576")
    target.send("dlopen libz.so.1")
    a = record(sqlite_cli, target.pid)
    target.send("unmap-anon")
    target.send("dlclose")
    target.send("heap 4000000")
    target.send("rwx")
    b = record(sqlite_cli, target.pid)
    doc = json_of(sqlite_cli, "diff", a, b)
    assert doc["match"] == "address"
    o = open_page(page_of(sqlite_cli, tmp_path, "diff.html", "diff", a, b))
    parts = doc["regions"]
    assert parts["added"] and parts["removed"] and parts["changed"]
    assert marked(o.page, "added") == sorted(r["start"] for r in parts["added"])
    assert marked(o.page, "removed") == sorted(r["start"] for r in parts["removed"])
    assert marked(o.page, "changed") == sorted(c["after"]["start"] for c in parts["changed"])
    after = json_of(sqlite_cli, "show", b)["regions"]
    assert o.page.locator(".r").count() == len(after) + len(parts["removed"])
    drawn = {r["kind"] for r in after} | {r["kind"] for r in parts["removed"]}
    assert sorted(legend(o.page)) == sorted(drawn)
    lib = "/usr/lib/x86_64-linux-gnu/libz.so"
    assert any(p.startswith(lib) for p in doc["libraries"]["unloaded"])
    assert lib in o.page.text_content("#summary")
    o.clean()


@pytest.mark.live
def test_diff_of_two_processes_draws_them_side_by_side(
    sqlite_cli: Cli, target_binary: Path, tmp_path: Path, open_page: Any
) -> None:
    one, two = Target(target_binary), Target(target_binary)
    try:
        two.send("dlopen libz.so.1")
        a, b = record(sqlite_cli, one.pid), record(sqlite_cli, two.pid)
    finally:
        one.stop()
        two.stop()
    doc = json_of(sqlite_cli, "diff", a, b)
    assert doc["match"] == "identity"
    o = open_page(page_of(sqlite_cli, tmp_path, "diff.html", "diff", a, b))
    assert o.page.locator(".map").count() == 2
    left = o.page.locator(".mapwrap").nth(0).bounding_box()
    right = o.page.locator(".mapwrap").nth(1).bounding_box()
    assert right["x"] >= left["x"] + left["width"]
    counts = [o.page.locator(".mapwrap").nth(i).locator(".r").count() for i in range(2)]
    assert counts == [doc["from"]["totals"]["regions"], doc["to"]["totals"]["regions"]]
    added = o.page.locator(".mapwrap >> nth=1").locator('.r[data-mark="added"]').count()
    assert added == len(doc["regions"]["added"])
    o.clean()


@pytest.mark.live
def test_replay_chart_has_a_point_per_step_and_a_step_shows_its_changes(
    sqlite_cli: Cli, target: Target, tmp_path: Path, open_page: Any
) -> None:
    record(sqlite_cli, target.pid)
    target.send("dlopen libz.so.1")
    record(sqlite_cli, target.pid)
    target.send("heap 8000000")
    record(sqlite_cli, target.pid)
    target.send("dlclose")
    record(sqlite_cli, target.pid)
    doc = json_of(sqlite_cli, "replay", "--pid", str(target.pid))
    steps = doc["steps"]
    o = open_page(page_of(sqlite_cli, tmp_path, "replay.html", "replay", "--pid", str(target.pid)))
    assert o.page.locator("#chart .pt").count() == len(steps) == 4
    assert o.page.locator("#chart .libmark").count() == 2  # libz loaded, then unloaded
    o.page.hover('#chart .pt[data-step="2"]')
    tip = o.page.text_content("#tip")
    third = steps[2]["snapshot"]
    assert f"snapshot {third['id']}" in tip and "heap" in tip
    for k in (1, 3):
        o.page.click(f'#chart .pt[data-step="{k}"]')
        regions = steps[k]["diff"]["regions"]
        assert marked(o.page, "added") == sorted(r["start"] for r in regions["added"])
        assert marked(o.page, "removed") == sorted(r["start"] for r in regions["removed"])
        assert marked(o.page, "changed") == sorted(c["after"]["start"] for c in regions["changed"])
        shown = json_of(sqlite_cli, "show", str(steps[k]["snapshot"]["id"]))["regions"]
        drawn = o.page.eval_on_selector_all(
            '.r:not([data-mark="removed"])', "e => e.map(x => x.dataset.start)"
        )
        assert drawn == [r["start"] for r in shown]
    o.clean()


def test_a_hostile_path_stays_text_in_the_browser(
    sqlite_cli: Cli, tmp_path: Path, open_page: Any
) -> None:
    text = fixture_text(
        "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"
    )
    evil = "/tmp/</script><img src=x onerror=alert(1)>.so"
    line = f"7f0000000000-7f0000100000 r--p 00000000 00:00 0                          {evil}\n"
    done = sqlite_cli("record", "--from-file", "-", "--pid", "4242", input=text + line)
    assert done.exit_code == 0, done.stderr
    o = open_page(page_of(sqlite_cli, tmp_path, "evil.html", "show", "1"))
    assert o.page.locator("img").count() == 0
    o.page.hover('.r[data-start="0x7f0000000000"]')
    assert evil in o.page.text_content("#tip")
    assert evil in o.page.text_content("#regions")
    o.clean()
