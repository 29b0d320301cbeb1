"""The time spellings `--at`, `--since` and `--until` accept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from memsnap.errors import UsageError
from memsnap.timeparse import parse_time

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)


def test_iso_with_offset() -> None:
    assert parse_time("2026-11-24T10:00:00+02:00", NOW) == datetime(
        2026, 11, 24, 8, 0, tzinfo=timezone.utc
    )
    assert parse_time("2026-11-24T10:00:00Z", NOW) == datetime(
        2026, 11, 24, 10, 0, tzinfo=timezone.utc
    )


def test_iso_without_offset_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        got = parse_time("2026-11-24 10:00", NOW)
        assert got == datetime(2026, 11, 24, 4, 30, tzinfo=timezone.utc)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_epoch_and_relative() -> None:
    assert parse_time("1764000000", NOW) == datetime.fromtimestamp(1764000000, timezone.utc)
    assert parse_time("10m ago", NOW) == NOW - timedelta(minutes=10)
    assert parse_time("2h ago", NOW) == NOW - timedelta(hours=2)
    assert parse_time("3 days ago", NOW) == NOW - timedelta(days=3)
    assert parse_time("yesterday", NOW) == NOW - timedelta(days=1)
    assert parse_time("now", NOW) == NOW


@pytest.mark.parametrize("text", ["garbage", "10 parsecs ago", "2026-13-45", "", "-5"])
def test_malformed_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_time(text, NOW)
