"""The README's pictures, from real runs: anyone can rerun this to refresh them.

Starts the tests' helper process (tests/helpers/target.c), records it through the
`memsnap` CLI while it loads libz, grows its heap and stack, maps anonymous memory and a
writable-and-executable page, and unloads libz again; then renders `show`, `diff` and
`replay` as html pages and `show --map` as coloured terminal text, and photographs each
with the system's chromium (driven by Playwright) into docs/images/.

    python benchmarks/screenshots.py                 # writes docs/images/*.png
    python benchmarks/screenshots.py --out /tmp/pics --keep

Needs a C compiler, an installed `memsnap`, playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from browser import BROWSER_ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parent.parent
HELPER_SOURCE = ROOT / "tests" / "helpers" / "target.c"
# The terminal colours of memsnap's KIND_COLORS codes, for the `show --map` picture.
ANSI_CSS = {
    "31": "#cd3131",
    "32": "#0dbc79",
    "33": "#c8b512",
    "34": "#2472c8",
    "35": "#bc3fbc",
    "36": "#11a8cd",
    "37": "#b5b5b5",
    "93": "#f5f543",
    "95": "#d670d6",
    "1;31": "#f14c4c",
    "1;32": "#23d18b",
    "1;33": "#f5f543",
    "1;34": "#3b8eea",
    "1;35": "#d670d6",
    "1;36": "#29b8db",
    "1;93": "#f5f543",
    "2": "#6e6e6e",
    "2;37": "#8a8a8a",
}


class Helper:
    """The tests' helper process: one layout change per command."""

    def __init__(self, workdir: Path) -> None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            sys.exit("a C compiler (cc) is needed to build the helper process")
        binary = workdir / "layout-demo"
        subprocess.run(
            [cc, "-O1", "-o", str(binary), str(HELPER_SOURCE), "-ldl", "-lpthread"], check=True
        )
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline().split()[1])

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer.startswith("ok"):
            sys.exit(f"helper: {command}: {answer.strip()}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def memsnap(db: Path, *args: str, env: dict[str, str] | None = None) -> str:
    print(f"$ memsnap {' '.join(args)}")
    done = subprocess.run(
        ["memsnap", "--db", str(db), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        sys.exit(f"memsnap {' '.join(args)} failed: {done.stderr.strip()}")
    sys.stdout.write(done.stderr)
    return done.stdout


def on_terminal(db: Path, *args: str, columns: int) -> str:
    """memsnap's output on a (pseudo) terminal, where it draws in colour."""
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        ["memsnap", "--db", str(db), *args], stdout=follower, stderr=subprocess.PIPE, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    if proc.wait() != 0:
        sys.exit(f"memsnap {' '.join(args)} failed")
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def record(db: Path, pid: int, label: str | None = None) -> int:
    extra = ["--label", label] if label else []
    line = memsnap(db, "record", str(pid), *extra)
    match = re.search(r"snapshot (\d+)", line)
    if match is None:
        sys.exit(f"unexpected record output: {line!r}")
    return int(match.group(1))


def terminal_page(text: str, title: str) -> str:
    """Coloured terminal text as a page, to photograph `show --map`."""
    out, colour = [], None
    for part in re.split(r"(\x1b\[[0-9;]*m)", text):
        code = re.fullmatch(r"\x1b\[([0-9;]*)m", part)
        if code:
            colour = None if code.group(1) in ("", "0") else ANSI_CSS.get(code.group(1), "#ddd")
            continue
        escaped = html.escape(part)
        out.append(f'<span style="color:{colour}">{escaped}</span>' if colour else escaped)
    body = "".join(out)
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<body style='margin:0;background:#121212;color:#d8d8d8'>"
        "<pre style='margin:0;padding:14px 16px;"
        'font:14px/1.35 "DejaVu Sans Mono",monospace\'>'
        f"<span style='color:#8a8a8a'>$ {html.escape(title)}</span>\n{body}</pre>"
    )


def photograph(pages: list[tuple[Path, Path, int, int, bool]]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        for page_file, png, width, height, hover in pages:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.as_uri())
            if page.locator("body[data-ready]").count() or "data-ready" in page.content():
                page.wait_for_selector("body[data-ready]")
            if hover:
                # Hover the heap (or the first added region), so the tooltip shows.
                target = page.locator(".r.m-added, .r.k8").first
                target.scroll_into_view_if_needed()
                target.hover()
                page.evaluate("window.scrollTo(0, 0)")
                target.hover()
            page.screenshot(path=str(png))
            page.close()
            print(f"wrote {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--keep", action="store_true", help="keep the html pages beside them")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = work / "memsnap.db"
        helper = Helper(work)
        try:
            first = record(db, helper.pid, "start")
            helper.send("thread")
            record(db, helper.pid, "thread")
            helper.send("dlopen libz.so.1")
            helper.send("heap 31457280")
            helper.send("stack 1572864")
            record(db, helper.pid, "libz")
            helper.send("anon 7340032")
            helper.send("rwx")
            loaded = record(db, helper.pid, "loaded")
            helper.send("heap 16777216")
            record(db, helper.pid, "heap")
            helper.send("dlclose")
            record(db, helper.pid, "unloaded")
        finally:
            helper.stop()
        pages = []
        show = work / "show.html"
        memsnap(db, "show", str(loaded), "--format", "html", "-o", str(show))
        pages.append((show, args.out / "show.png", 1400, 1000, True))
        diff = work / "diff.html"
        memsnap(db, "diff", str(first), str(loaded), "--format", "html", "-o", str(diff))
        pages.append((diff, args.out / "diff.png", 1400, 1150, False))
        replay = work / "replay.html"
        memsnap(db, "replay", "--pid", str(helper.pid), "--format", "html", "-o", str(replay))
        pages.append((replay, args.out / "replay.png", 1400, 1150, False))
        term = on_terminal(db, "show", str(loaded), "--map", columns=110)
        # The same map without colour, as a pipe gets it (for the README's text).
        print(memsnap(db, "show", str(loaded), "--map", env={"NO_COLOR": "1", "COLUMNS": "100"}))
        map_page = work / "map.html"
        map_page.write_text(terminal_page(term, f"memsnap show {loaded} --map"), encoding="utf-8")
        pages.append((map_page, args.out / "map.png", 1040, 250, False))
        photograph(pages)
        if args.keep:
            for page_file, *_ in pages:
                shutil.copy(page_file, args.out / page_file.name)


if __name__ == "__main__":
    main()
