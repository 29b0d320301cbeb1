"""Ctrl-C and SIGTERM during a watch (`record --every`): both unwind the round in progress
as a KeyboardInterrupt, so a half-written snapshot rolls back and every finished one is
kept; the caller turns it into memsnap's interrupted exit (130, or 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM during a watch: unwinds like Ctrl-C (a half-written snapshot rolls back)."""


# The interrupt a signal raised, kept: Python drops an exception raised while it runs a
# weakref or gc callback ("Exception ignored in ..."), and a Ctrl-C that landed in one
# (SQLAlchemy has some) would be lost; it is raised again at the next process or round.
_PENDING: list[type[KeyboardInterrupt]] = []


def _on_sigterm(_signum: int, _frame: object) -> None:
    _PENDING.append(Terminated)
    raise Terminated


def _on_sigint(_signum: int, _frame: object) -> None:
    _PENDING.append(KeyboardInterrupt)
    raise KeyboardInterrupt


def _quiet_unraisable(unraisable: Any) -> None:
    """An interrupt dropped in a callback is raised again (`_PENDING`): no traceback."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def raise_pending() -> None:
    """Raise again an interrupt that a callback swallowed since `watch_signals` began."""
    if _PENDING:
        raise _PENDING[0]


@contextmanager
def watch_signals(watching: bool) -> Iterator[None]:
    """While a watch runs (`watching`), SIGTERM and SIGINT raise `Terminated` and
    KeyboardInterrupt and are remembered for `raise_pending`; everything is put back
    as it was when the block ends. A one-shot record keeps Python's own handling."""
    _PENDING.clear()  # what an earlier watch in this process left is not this one's
    if not watching:
        yield
        return
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable
    try:
        yield
    finally:
        # None: the handler was not installed from Python, and cannot be put back from it.
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
        sys.unraisablehook = previous_hook
