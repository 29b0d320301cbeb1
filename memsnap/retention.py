"""Retention policy: which snapshots of one process a `prune` keeps. Pure.

The rules are restic's `forget` (internal/data/snapshot_policy.go), applied to one
process's history at a time, newest first:

- `keep_last N`: the N newest snapshots.
- `keep_hourly/daily/weekly N`: walking from the newest, a snapshot is kept when its
  period (hour, day, ISO week) differs from the previous kept one's for that rule, until
  N periods have one. So each rule keeps the newest snapshot of each of the last N
  periods that have a snapshot, however far apart they are. As restic does, a rule that
  still has periods to fill when it reaches the oldest snapshot keeps that one too.
- `keep_within D`: every snapshot taken less than D before the process's latest
  snapshot (strictly after `latest - D`). A snapshot dated after `now` (a clock set
  wrong) does not move that reference, as in restic.

memsnap adds one rule of its own: a process's first and latest snapshots (lowest and
highest seq) are always kept: the first says how it started, the latest is what the next
recording of the process is compared with.

Periods are calendar periods in a time zone the caller passes: the CLI passes the local
time zone, so `--keep-daily` means days as `list` shows them. Hours on the day a clock
goes back repeat, and that hour counts once, as in restic.

A policy with no rule at all is refused (`UsageError`), as restic refuses to forget
without one: a bare `prune` would otherwise delete all but two snapshots of everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from memsnap.errors import UsageError

_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+)([mhdw])")
# Durations past a century are certainly a typo, and timedelta overflows not far beyond.
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: str) -> timedelta:
    """`30m`, `12h`, `7d`, `2w`, or several combined (`1d12h`); anything else is a
    `UsageError`. Units: m minutes, h hours, d days (24 hours), w weeks."""
    spelled = text.strip().lower()
    parts = _DURATION_PART.findall(spelled)
    if not spelled or "".join(n + u for n, u in parts) != spelled:
        raise UsageError(
            f"cannot read the duration {text!r}: use a number and a unit, m (minutes), "
            "h (hours), d (days) or w (weeks), e.g. 30m, 12h, 7d, 2w or 1d12h"
        )
    units = [u for _, u in parts]
    if len(set(units)) != len(units):
        raise UsageError(f"the duration {text!r} names a unit twice")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"the duration {text!r} is zero: it would keep nothing")
    if seconds > MAX_DURATION.total_seconds():
        raise UsageError(f"the duration {text!r} is longer than a century")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Policy:
    """What to keep; 0 or None means the rule is not used."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    within: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("last", "hourly", "daily", "weekly"):
            if getattr(self, name) < 0:
                raise UsageError(f"--keep-{name} takes a whole number from 0 up")

    @property
    def empty(self) -> bool:
        return not (self.last or self.hourly or self.daily or self.weekly or self.within)

    def describe(self) -> str:
        """The policy as the options that give it: `--keep-last 2 --keep-within 1d`."""
        rules = [
            f"--keep-{name} {n}"
            for name, n in (
                ("last", self.last),
                ("hourly", self.hourly),
                ("daily", self.daily),
                ("weekly", self.weekly),
            )
            if n
        ]
        if self.within:
            rules.append(f"--keep-within {_spell(self.within)}")
        return " ".join(rules)


def _spell(duration: timedelta) -> str:
    """A duration as DURATION spells it: `1d12h`."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit in ("w", "d", "h", "m"):
        n, seconds = divmod(seconds, _DURATION_UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Stamp:
    """A snapshot as the policy sees it: its position in its process and its time."""

    seq: int
    taken_at: datetime


def _hour(d: datetime) -> int:
    return ((d.year * 100 + d.month) * 100 + d.day) * 100 + d.hour


def _day(d: datetime) -> int:
    return (d.year * 100 + d.month) * 100 + d.day


def _week(d: datetime) -> int:
    year, week, _ = d.isocalendar()
    return year * 100 + week


def require_rule(policy: Policy) -> None:
    if policy.empty:
        raise UsageError(
            "no keep rule given: say what to keep with --keep-last, --keep-within, "
            "--keep-hourly, --keep-daily or --keep-weekly (nothing was removed)"
        )


def keep(stamps: Sequence[Stamp], policy: Policy, tz: tzinfo | None, now: datetime) -> set[int]:
    """The seqs of one process's snapshots that `policy` keeps (times are aware; periods
    are counted in `tz`, None meaning the local time zone with its daylight saving)."""
    require_rule(policy)
    if not stamps:
        return set()
    # Newest first; at equal times the later-recorded (higher seq) counts as newer.
    order = sorted(stamps, key=lambda s: (s.taken_at, s.seq), reverse=True)
    # The first and the latest recorded (by seq: the latest is what the next recording
    # of the process is compared with, whatever clock its time came from).
    seqs = [s.seq for s in stamps]
    kept = {min(seqs), max(seqs)}
    rules: list[tuple[int, Callable[[datetime], int] | None]] = [
        (policy.last, None),
        (policy.hourly, _hour),
        (policy.daily, _day),
        (policy.weekly, _week),
    ]
    left = [count for count, _ in rules]
    last_period: list[int | None] = [None] * len(rules)
    past = [s.taken_at for s in stamps if s.taken_at <= now]
    latest = max(past) if past else None
    oldest = len(order) - 1
    for nr, stamp in enumerate(order):
        local = stamp.taken_at.astimezone(tz)
        if policy.within and (latest is None or stamp.taken_at > latest - policy.within):
            kept.add(stamp.seq)
        for i, (_, period_of) in enumerate(rules):
            if left[i] <= 0:
                continue
            period = nr if period_of is None else period_of(local)
            if period != last_period[i] or nr == oldest:
                kept.add(stamp.seq)
                last_period[i] = period
                left[i] -= 1
    return kept
