"""The system chromium the benchmarks and screenshots drive through Playwright, and the
flags that keep it from reaching for the network (it never downloads a browser)."""

from __future__ import annotations

import os

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
