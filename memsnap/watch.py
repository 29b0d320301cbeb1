"""Watch mode: a snapshot of each process every so often, until told to stop.

Stops after `count` rounds, when every watched process has exited, or on Ctrl-C. Each
snapshot is its own transaction, so an interruption keeps every finished snapshot and
never a half-taken one. Ticks are scheduled from the start time, not from the end of the
previous snapshot, so a slow snapshot does not make the watch drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from memsnap.errors import ProcessError, ProcessGone

if TYPE_CHECKING:
    from memsnap.record import Recorded

MAX_INTERVAL_S = 7 * 86400


@dataclass
class WatchState:
    taken: int = 0
    rounds: int = 0
    stopped: dict[int, str] = field(default_factory=dict)  # pid -> why it is not watched


def watch(
    pids: Sequence[int],
    every: float,
    count: int | None,
    take: Callable[[int], Recorded],
    on_snapshot: Callable[[Recorded, WatchState], None],
    on_gone: Callable[[int, str, WatchState], None],
    on_wait: Callable[[float, WatchState], None] = lambda _s, _w: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchState:
    """Run the watch; returns what happened. KeyboardInterrupt passes through."""
    state = WatchState()
    alive = list(pids)
    start = clock()
    while alive and (count is None or state.rounds < count):
        for pid in list(alive):
            try:
                done = take(pid)
            except ProcessError as exc:
                # Gone, or no longer readable: stop watching it, keep what was taken.
                why = f"pid {pid} exited" if isinstance(exc, ProcessGone) else str(exc)
                alive.remove(pid)
                state.stopped[pid] = why
                on_gone(pid, why, state)
                continue
            state.taken += 1
            on_snapshot(done, state)
        state.rounds += 1
        if not alive or (count is not None and state.rounds >= count):
            break
        next_tick = start + state.rounds * every
        while (left := next_tick - clock()) > 0:
            on_wait(left, state)
            sleep(min(left, 1.0))
    return state
