"""How long a big `show --format html` page takes: to write, and to draw in a browser.

Records the tests' helper process with N one-page mappings (60,000 by default), writes
its page with `memsnap show ID --format html -o FILE`, then opens the page from file://
in the system's chromium (driven by Playwright) and times it from navigation until the
page's script has drawn every region and the browser has laid them out. Prints the
median of the rounds and the target (3 s to draw 60,000 regions).

    python benchmarks/html_bench.py
    python benchmarks/html_bench.py --mappings 20000 --rounds 3

Needs a C compiler, an installed `memsnap`, playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Helper
from browser import BROWSER_ARGS, CHROMIUM

TARGET_SECONDS = 3.0


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mappings", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    memsnap = shutil.which("memsnap")
    if memsnap is None:
        sys.exit("needs an installed memsnap on PATH")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        helper = Helper(work, args.mappings)
        try:
            db = str(work / "bench.db")
            subprocess.run([memsnap, "--db", db, "record", str(helper.pid)], check=True)
            regions = helper.regions()
        finally:
            helper.stop()
        page_file = work / "show.html"
        write = [memsnap, "--db", db, "show", "1", "--format", "html", "-o", str(page_file)]
        writes = [timed(write) for _ in range(args.rounds)]
        draws = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            for _ in range(args.rounds):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                start = time.perf_counter()
                page.goto(page_file.as_uri())
                page.wait_for_selector("body[data-ready]")
                drawn = page.evaluate(
                    "() => { document.body.getBoundingClientRect();"
                    " return document.querySelectorAll('.r').length; }"
                )
                draws.append(time.perf_counter() - start)
                page.close()
                if drawn != regions:
                    sys.exit(f"the page drew {drawn} regions of {regions}")
            browser.close()
        size = page_file.stat().st_size
    print(f"{regions} regions, page of {size / 2**20:.1f} MiB (median of {args.rounds} rounds)")
    print(f"{'what':<40} {'seconds':>8} {'target':>8}")
    print(f"{'show --format html -o FILE (write)':<40} {statistics.median(writes):>8.2f} {'':>8}")
    draw = statistics.median(draws)
    verdict = "ok" if draw < TARGET_SECONDS else "SLOW"
    print(f"{'page drawn in chromium':<40} {draw:>8.2f} {TARGET_SECONDS:>8.1f}  {verdict}")


if __name__ == "__main__":
    main()
