"""Doing something every so often: the schedule behind `record --every`.

Ticks are scheduled from the start time, not from the end of the previous round, so a
slow round does not make the watch drift. Ctrl-C (KeyboardInterrupt) passes through to
the caller, which has kept every finished snapshot: each is its own transaction.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

MAX_INTERVAL_S = 7 * 86400


def every(
    interval: float,
    count: int | None,
    round_: Callable[[int], bool],
    on_wait: Callable[[float], None] = lambda _left: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run `round_(n)` for n = 1, 2, ... every `interval` seconds, until `count` rounds
    are done or a round returns False. Returns the number of rounds run."""
    start = clock()
    done = 0
    # Everything alive before the first round (imported modules, the database engine)
    # lives as long as the watch: frozen out of the cycle collector's sight, so that the
    # collection after each round walks what the rounds left, not every object of the
    # libraries memsnap imports (most of a quiet round's CPU time otherwise).
    gc.freeze()
    try:
        while count is None or done < count:
            done += 1
            if not round_(done) or (count is not None and done >= count):
                break
            # Commands run with the cycle collector off (memsnap.cli); a watch may run
            # for days, so whatever cycles a round left are collected before the next.
            gc.collect()
            next_tick = start + done * interval
            while (left := next_tick - clock()) > 0:
                on_wait(left)
                sleep(min(left, 1.0))
    finally:
        gc.unfreeze()
    return done
