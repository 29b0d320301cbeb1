"""Whether memsnap uses its optional C extension (memsnap/_smaps.c): one decision for
every module that has a native path (memsnap.parse's scanner, memsnap.capture.procfs's
whole-file read)."""

from __future__ import annotations

import os
from types import ModuleType


def extension() -> ModuleType | None:
    """The C extension when it was built at install (it is optional) and not turned off
    with MEMSNAP_NATIVE=0 (to compare, or to rule it out)."""
    if os.environ.get("MEMSNAP_NATIVE", "1") == "0":
        return None
    try:
        from memsnap import _smaps
    except ImportError:
        return None
    return _smaps
