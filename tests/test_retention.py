"""The retention policy (memsnap.retention), on plain values: restic's own test cases
(tests/fixtures/restic) and small histories whose times are chosen to sit on the edges."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

import pytest

from conftest import FIXTURES
from memsnap.errors import UsageError
from memsnap.retention import Policy, Stamp, keep, parse_duration

UTC = timezone.utc
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=UTC)


def history(*times: str) -> list[Stamp]:
    """Stamps numbered in time order, as a process's recordings are."""
    return [Stamp(seq, utc(t)) for seq, t in enumerate(sorted(times, key=utc), start=1)]


def kept_times(stamps: list[Stamp], policy: Policy, tz: timezone = UTC) -> list[str]:
    seqs = keep(stamps, policy, tz, NOW)
    return sorted(s.taken_at.strftime("%Y-%m-%d %H:%M") for s in stamps if s.seq in seqs)


class ResticCase(TypedDict):
    """One case of restic's policy tests, as policy_cases.json holds it."""

    golden: int
    policy: dict[str, Any]
    keep: list[str]


def _restic_cases() -> list[ResticCase]:
    path = FIXTURES / "restic" / "policy_cases.json"
    assert path.is_file(), f"missing {path}"
    cases: list[ResticCase] = json.loads(path.read_text())["cases"]
    return cases


RESTIC = json.loads((FIXTURES / "restic" / "policy_cases.json").read_text())


@pytest.mark.parametrize("case", _restic_cases(), ids=lambda c: f"golden{c['golden']}")
def test_keeps_what_restic_keeps_plus_first_and_latest(case: ResticCase) -> None:
    stamps = history(*RESTIC["snapshots"])
    spec = dict(case["policy"])
    if "within" in spec:
        spec["within"] = parse_duration(spec["within"])
    seqs = keep(stamps, Policy(**spec), UTC, NOW)
    got = Counter(s.taken_at for s in stamps if s.seq in seqs)
    want = Counter(utc(t) for t in case["keep"])
    # memsnap's own rule on top of restic's: the first and the latest always stay.
    for edge in (stamps[0], stamps[-1]):
        if want[edge.taken_at] < got[edge.taken_at]:
            want[edge.taken_at] += 1
    assert got == want


def test_the_restic_cases_are_all_there() -> None:
    assert len(RESTIC["snapshots"]) == 103
    assert [c["golden"] for c in RESTIC["cases"]] == [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 21, 22, 23, 27
    ]  # fmt: skip


def test_no_rule_is_refused() -> None:
    with pytest.raises(UsageError, match="no keep rule"):
        keep(history("2026-01-01 10:00"), Policy(), UTC, NOW)


def test_first_and_latest_always_stay() -> None:
    stamps = history("2026-01-01 10:00", "2026-01-01 10:01", "2026-01-01 10:02")
    # keep-last 1 alone would keep only the newest.
    assert kept_times(stamps, Policy(last=1)) == ["2026-01-01 10:00", "2026-01-01 10:02"]


def test_latest_by_seq_stays_even_if_its_clock_was_behind() -> None:
    # Recorded last (seq 3) but dated before the others: the writer compares the next
    # recording with the highest seq, so that one must stay.
    stamps = [
        Stamp(1, utc("2026-01-01 10:00")),
        Stamp(2, utc("2026-01-01 12:00")),
        Stamp(3, utc("2026-01-01 09:00")),
        Stamp(4, utc("2026-01-01 11:00")),
        Stamp(5, utc("2026-01-01 08:00")),
    ]
    assert keep(stamps, Policy(last=1), UTC, NOW) == {1, 2, 5}


def test_hourly_keeps_the_newest_of_each_of_the_last_hours_that_have_one() -> None:
    stamps = history(
        "2026-01-01 08:10",
        "2026-01-01 10:05",
        "2026-01-01 10:40",
        "2026-01-01 10:59",  # newest of hour 10
        "2026-01-01 13:00",
        "2026-01-01 13:30",  # newest of hour 13 (hours 11 and 12 have none)
        "2026-01-01 14:01",
    )
    assert kept_times(stamps, Policy(hourly=3)) == [
        "2026-01-01 08:10",  # the first, always
        "2026-01-01 10:59",
        "2026-01-01 13:30",
        "2026-01-01 14:01",
    ]


def test_a_rule_with_periods_left_keeps_the_oldest_as_restic_does() -> None:
    stamps = history("2026-01-01 10:00", "2026-01-01 10:30", "2026-01-01 10:50")
    assert kept_times(stamps, Policy(daily=5)) == ["2026-01-01 10:00", "2026-01-01 10:50"]


def test_the_oldest_by_time_is_kept_by_a_rule_with_periods_left() -> None:
    # Recorded first (seq 1) but not the oldest by its time: restic keeps the oldest.
    stamps = [
        Stamp(1, utc("2026-01-01 10:00")),
        Stamp(2, utc("2026-01-01 08:00")),
        Stamp(3, utc("2026-01-01 11:00")),
        Stamp(4, utc("2026-01-01 11:30")),
    ]
    assert keep(stamps, Policy(daily=5), UTC, NOW) == {1, 2, 4}
    assert keep(stamps, Policy(last=5), UTC, NOW) == {1, 2, 3, 4}


def test_daily_days_follow_the_time_zone_given() -> None:
    # 23:30 and 00:30 UTC are one day in UTC-2 and two in UTC.
    stamps = history("2026-01-01 12:00", "2026-01-01 23:30", "2026-01-02 00:30")
    minus_two = timezone(timedelta(hours=-2))
    assert kept_times(stamps, Policy(daily=2), UTC) == [
        "2026-01-01 12:00",
        "2026-01-01 23:30",
        "2026-01-02 00:30",
    ]
    assert keep(stamps, Policy(daily=2), minus_two, NOW) == {1, 3}


def test_weekly_weeks_are_iso_weeks_starting_monday() -> None:
    # 2026-01-04 is a Sunday, 2026-01-05 a Monday.
    stamps = history("2026-01-01 09:00", "2026-01-03 09:00", "2026-01-04 09:00", "2026-01-05 09:00")
    assert keep(stamps, Policy(weekly=2), UTC, NOW) == {1, 3, 4}


def test_within_is_counted_back_from_the_latest_snapshot_not_now() -> None:
    stamps = history(
        "2020-01-01 00:00",
        "2020-01-09 23:00",
        "2020-01-10 00:00",  # exactly one day before the latest: not within (restic: after)
        "2020-01-10 00:01",
        "2020-01-11 00:00",
    )
    assert kept_times(stamps, Policy(within=parse_duration("1d"))) == [
        "2020-01-01 00:00",
        "2020-01-10 00:01",
        "2020-01-11 00:00",
    ]


def test_within_ignores_a_snapshot_dated_in_the_future() -> None:
    stamps = history("2029-12-30 10:00", "2029-12-31 10:00", "2029-12-31 23:00", "2031-01-01 00:00")
    # The reference is 2029-12-31 23:00 (the newest not after NOW), not 2031.
    assert keep(stamps, Policy(within=parse_duration("1h")), UTC, NOW) == {1, 3, 4}


def test_rules_add_up() -> None:
    stamps = history(*(f"2026-01-{d:02d} 12:00" for d in range(1, 11)))
    # last 2 (days 10, 9), daily 4 (10, 9, 8, 7), within 5d of day 10 (6..10 minus edge).
    assert keep(stamps, Policy(last=2), UTC, NOW) == {1, 9, 10}
    assert keep(stamps, Policy(last=2, daily=4), UTC, NOW) == {1, 7, 8, 9, 10}
    assert keep(stamps, Policy(within=parse_duration("4d12h")), UTC, NOW) == {1, 6, 7, 8, 9, 10}


def test_one_snapshot_and_none() -> None:
    assert keep(history("2026-01-01 10:00"), Policy(last=1), UTC, NOW) == {1}
    assert keep([], Policy(last=1), UTC, NOW) == set()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("1w2d3h4m", 788640),
        (" 7D ", 604800),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    ["", "7", "d", "7x", "7 d", "1.5d", "-1d", "0d", "1d1d", "7dd", "d7", "1y", "1d 2h", "999999w"],
)
def test_malformed_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_negative_counts_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        Policy(last=-1)


def test_a_policy_describes_itself_as_its_options() -> None:
    policy = Policy(last=2, daily=7, within=parse_duration("1w1d12h30m"))
    assert policy.describe() == "--keep-last 2 --keep-daily 7 --keep-within 1w1d12h30m"
