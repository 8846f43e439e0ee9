"""The occurrence calculator: DST both ways, fixed offsets, month ends, leap years, count/until."""

from __future__ import annotations

import datetime as dt

import pytest

from mailer.domain.recurrence import InvalidTimezone, Recurrence, parse_timezone

UTC = dt.UTC


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_daily_in_berlin_keeps_09_00_local_across_the_spring_change() -> None:
    rule = Recurrence(dt.datetime(2026, 3, 27, 9, 0), "Europe/Berlin", "DAILY", count=4)
    assert list(rule.occurrences()) == [
        utc(2026, 3, 27, 8, 0),  # CET, UTC+1
        utc(2026, 3, 28, 8, 0),
        utc(2026, 3, 29, 7, 0),  # CEST from 29 March, UTC+2: still 09:00 local
        utc(2026, 3, 30, 7, 0),
    ]


def test_daily_in_berlin_keeps_09_00_local_across_the_autumn_change() -> None:
    rule = Recurrence(dt.datetime(2026, 10, 24, 9, 0), "Europe/Berlin", "DAILY", count=3)
    assert list(rule.occurrences()) == [utc(2026, 10, 24, 7, 0), utc(2026, 10, 25, 8, 0), utc(2026, 10, 26, 8, 0)]


def test_a_time_in_the_spring_gap_moves_forward_by_the_gap() -> None:
    rule = Recurrence(dt.datetime(2026, 3, 28, 2, 30), "Europe/Berlin", "DAILY", count=3)
    assert list(rule.occurrences()) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 30),  # 02:30 does not exist: 03:30 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_a_time_that_exists_twice_in_autumn_is_the_first_one() -> None:
    rule = Recurrence(dt.datetime(2026, 10, 25, 2, 30), "Europe/Berlin", "DAILY", count=1)
    assert list(rule.occurrences()) == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST, not 02:30 CET


def test_new_york_weekly_across_dst() -> None:
    rule = Recurrence(dt.datetime(2026, 3, 1, 8, 0), "America/New_York", "WEEKLY", count=3)
    assert list(rule.occurrences()) == [utc(2026, 3, 1, 13, 0), utc(2026, 3, 8, 12, 0), utc(2026, 3, 15, 12, 0)]


@pytest.mark.parametrize(
    ("name", "offset"),
    [("UTC+2", dt.timedelta(hours=2)), ("UTC-05:30", dt.timedelta(hours=-5, minutes=-30)),
     ("UTC+0530", dt.timedelta(hours=5, minutes=30)), ("UTC", dt.timedelta(0))],
)
def test_fixed_offsets_read_as_iso_8601(name: str, offset: dt.timedelta) -> None:
    assert parse_timezone(name).utcoffset(None) == offset


def test_fixed_offset_has_no_dst() -> None:
    rule = Recurrence(dt.datetime(2026, 3, 28, 9, 0), "UTC+2", "DAILY", count=3)
    assert [at.hour for at in rule.occurrences()] == [7, 7, 7]


@pytest.mark.parametrize("name", ["Mars/Olympus", "UTC+15", "UTC+2:75", "GMT+2", "", "../etc/passwd"])
def test_unknown_timezones_are_refused(name: str) -> None:
    with pytest.raises(InvalidTimezone):
        parse_timezone(name)


def test_monthly_on_the_31st_skips_months_without_one() -> None:
    rule = Recurrence(dt.datetime(2026, 1, 31, 9, 0), "UTC", "MONTHLY", count=4)
    assert [at.date() for at in rule.occurrences()] == [
        dt.date(2026, 1, 31), dt.date(2026, 3, 31), dt.date(2026, 5, 31), dt.date(2026, 7, 31)
    ]


def test_yearly_on_29_february_happens_in_leap_years_only() -> None:
    rule = Recurrence(dt.datetime(2028, 2, 29, 9, 0), "UTC", "YEARLY", count=3)
    assert [at.year for at in rule.occurrences()] == [2028, 2032, 2036]


def test_interval_and_count() -> None:
    rule = Recurrence(dt.datetime(2026, 12, 1, 9, 0), "UTC", "DAILY", interval=3, count=3)
    assert [at.day for at in rule.occurrences()] == [1, 4, 7]


def test_until_is_inclusive() -> None:
    rule = Recurrence(dt.datetime(2026, 12, 1, 9, 0), "UTC", "DAILY", until_local=dt.datetime(2026, 12, 3, 9, 0))
    assert [at.day for at in rule.occurrences()] == [1, 2, 3]


def test_next_after_and_upcoming() -> None:
    rule = Recurrence(dt.datetime(2026, 12, 1, 9, 0), "Europe/Berlin", "DAILY", count=10)
    now = utc(2026, 12, 3, 8, 0)  # exactly the 3 December occurrence: strictly after means the 4th
    assert rule.next_after(now) == utc(2026, 12, 4, 8, 0)
    assert rule.upcoming(now) == [utc(2026, 12, day, 8, 0) for day in range(4, 9)]
    assert rule.next_after(utc(2026, 12, 10, 8, 0)) is None  # count exhausted


def test_upcoming_far_into_a_long_rule_is_quick() -> None:
    rule = Recurrence(dt.datetime(2000, 1, 1, 9, 0), "Europe/Berlin", "DAILY")
    assert rule.upcoming(utc(2026, 7, 1, 12, 0), 2) == [utc(2026, 7, 2, 7, 0), utc(2026, 7, 3, 7, 0)]


def _brute_force(rule: Recurrence, after: dt.datetime, limit: int = 5) -> list[dt.datetime]:
    """The occurrences after `after` as dateutil gives them walking from the very start."""
    from dateutil import rrule as dateutil_rrule

    from mailer.domain.recurrence import FREQUENCIES, to_utc

    zone = parse_timezone(rule.timezone)
    every = dateutil_rrule.rrule(FREQUENCIES[rule.frequency], dtstart=rule.start_local, interval=rule.interval,
                                 count=rule.count, until=rule.until_local)
    found = []
    for local in every:
        at = to_utc(local, zone)
        if at > after:
            found.append(at)
            if len(found) == limit:
                break
    return found


def test_a_rule_started_near_the_asked_time_gives_what_walking_from_the_start_gives() -> None:
    import random

    rng = random.Random(17)  # noqa: S311  # reproducible test data, not security
    zones = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC", "UTC+5:45", "Pacific/Apia"]
    for _ in range(600):
        start = dt.datetime(2020, 1, 1) + dt.timedelta(minutes=rng.randrange(0, 6 * 365 * 24 * 60))
        frequency = rng.choice(["DAILY", "WEEKLY", "MONTHLY"])
        interval = rng.choice([1, 1, 2, 3, 7, 30, 1000])
        count = rng.choice([None, None, 1, 2, 10, 100, 1000])
        until = None if count is not None or rng.random() < 0.5 else start + dt.timedelta(days=rng.randrange(0, 4000))
        rule = Recurrence(start, rng.choice(zones), frequency, interval, count, until)
        after = utc(2020, 1, 1) + dt.timedelta(minutes=rng.randrange(-60 * 24 * 30, 8 * 365 * 24 * 60))
        assert rule.upcoming(after) == _brute_force(rule, after), rule


def test_a_daily_rule_from_year_one_answers_at_once() -> None:
    import time

    rule = Recurrence(dt.datetime(1, 1, 2, 9, 0), "Europe/Berlin", "DAILY", count=800_000)
    started = time.process_time()
    upcoming = rule.upcoming(utc(2026, 12, 4))
    assert time.process_time() - started < 0.1  # walking from year 1 took about 1 s
    assert upcoming == _brute_force(rule, utc(2026, 12, 4))
    assert Recurrence(dt.datetime(1, 1, 2, 9, 0), "UTC", "DAILY", count=700_000).upcoming(utc(2026, 12, 4)) == []
