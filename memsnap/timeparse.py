"""Reading the times people type: ISO 8601, Unix epochs and `10m ago`. Pure.

A time without an offset is local time, as a person at the terminal means it. Relative
spellings count back from `now` (git's `yesterday` is this moment one day ago; so is
ours). Anything else is a `UsageError` (exit 2).
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


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime for `text`, or `UsageError` naming what was expected."""
    now = now or datetime.now(timezone.utc)
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
