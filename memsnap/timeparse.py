"""Reading the times people type: ISO 8601, Unix epochs and `10m ago`. Pure.

A time without an offset is local time, as a person at the terminal means it. Relative
spellings count back from `now` (git's `yesterday` is this moment one day ago; so is
ours). A time must fall in 1970..9999 once in UTC: no snapshot is older than the Unix
epoch, and both SQLite's text times and Python's datetimes end with year 9999. Anything
else is a `UsageError` (exit 2).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from memsnap.errors import UsageError

_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)\s+ago")
_EPOCH = re.compile(r"\d{1,12}(?:\.\d+)?")


EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime for `text`, or `UsageError` naming what was expected."""
    now = now or datetime.now(timezone.utc)
    try:
        moment = _read(text, now)
        # Converted here, so a moment near year 1 or 9999 that only exists in its own
        # offset fails now, not in the database driver.
        in_utc = moment.astimezone(timezone.utc)
    except (OverflowError, ValueError, OSError):
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc <= LATEST:
        raise UsageError(
            f"the time {text!r} is out of range: memsnap's times run from "
            "1970-01-01 to 9999-12-31 (UTC)"
        )
    return moment


def _read(text: str, now: datetime) -> datetime:
    spelled = text.strip().lower()
    if spelled == "now":
        return now
    if spelled == "yesterday":
        return now - timedelta(days=1)
    if spelled == "today":
        return now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    if _EPOCH.fullmatch(spelled) and len(spelled.split(".")[0]) > 4:
        return datetime.fromtimestamp(float(spelled), tz=timezone.utc)
    relative = _RELATIVE.fullmatch(spelled)
    if relative:
        amount, unit = relative.groups()
        if unit not in _UNITS:
            raise UsageError(f"unknown time unit {unit!r} in {text!r} (use s, m, h, d or w)")
        return now - timedelta(seconds=float(amount) * _UNITS[unit])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}: use ISO 8601 (2026-11-24T10:00:00, "
            "2026-11-24 10:00, with or without an offset), a Unix epoch in seconds, or "
            "a relative time (10m ago, 2h ago, yesterday)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a naive time is local time
    return moment
