"""Occurrences of a recurring schedule: RFC 5545 rules in local wall-clock time, returned in UTC."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
import zoneinfo
from collections.abc import Iterator

from dateutil import rrule

FREQUENCIES = {"DAILY": rrule.DAILY, "WEEKLY": rrule.WEEKLY, "MONTHLY": rrule.MONTHLY, "YEARLY": rrule.YEARLY}
# Frequencies whose occurrences repeat every interval x this many days of wall-clock time (see _rule).
_PERIOD_DAYS = {"DAILY": 1, "WEEKLY": 7}
_FIXED_OFFSET = re.compile(r"\AUTC(?:(?P<sign>[+-])(?P<hours>\d{1,2})(?::?(?P<minutes>\d{2}))?)?\Z")


class InvalidTimezone(ValueError):
    """Neither an IANA zone name nor a fixed offset like UTC+2 or UTC-05:30."""


def parse_timezone(name: str) -> dt.tzinfo:
    """An IANA zone (Europe/Berlin) or a fixed offset (UTC+2 means +02:00, as ISO 8601 reads it)."""
    match = _FIXED_OFFSET.match(name)
    if match:
        if not match["sign"]:
            return dt.UTC
        hours, minutes = int(match["hours"]), int(match["minutes"] or 0)
        if hours > 14 or minutes > 59:
            raise InvalidTimezone(f"{name} is not a valid UTC offset")
        offset = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(-offset if match["sign"] == "-" else offset, name)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidTimezone(f"{name} is not a known IANA time zone or a UTC offset") from None


@dataclasses.dataclass(frozen=True)
class Recurrence:
    """A rule: first local wall-clock time, zone, frequency, interval, and at most one of count/until."""

    start_local: dt.datetime  # naive: wall-clock time in `timezone`
    timezone: str
    frequency: str = "DAILY"
    interval: int = 1
    count: int | None = None
    until_local: dt.datetime | None = None  # naive, inclusive

    def _rule(self, near: dt.datetime | None = None) -> rrule.rrule | None:
        """The dateutil rule; with `near` (local), started at an occurrence just before it when that is exact.

        dateutil walks every period from the start to reach a time: a DAILY rule from year 1 walked 740,000
        days (about 1 s) for each computation. A DAILY or WEEKLY rule without BY-parts repeats every
        interval x 1 or 7 days of wall-clock time, so it may start at any of its own occurrences, with the
        count reduced by the occurrences skipped. None: the rule ends before `near`.
        """
        start, count = self.start_local, self.count
        days = _PERIOD_DAYS.get(self.frequency)
        if near is not None and days is not None:
            period = dt.timedelta(days=days * self.interval)
            skipped = max((near - start) // period - 1, 0)
            if count is not None and skipped >= count:
                return None
            start += skipped * period
            count = None if count is None else count - skipped
        return rrule.rrule(
            FREQUENCIES[self.frequency], dtstart=start, interval=self.interval, count=count, until=self.until_local
        )

    def occurrences(self, after: dt.datetime | None = None) -> Iterator[dt.datetime]:
        """Occurrences in UTC, in order, strictly after `after` (aware) when given."""
        zone = parse_timezone(self.timezone)
        if after is None:
            local_times: Iterator[dt.datetime] = iter(self._rule() or ())
        else:
            # Start a day early in local time: local and UTC order agree, but a day covers any offset.
            near = after.astimezone(zone).replace(tzinfo=None) - dt.timedelta(days=1)
            rule = self._rule(near)
            local_times = iter(()) if rule is None else rule.xafter(near, inc=True)
        for local in local_times:
            at = to_utc(local, zone)
            if after is None or at > after:
                yield at

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first occurrence strictly after `after`, or None when the rule has ended."""
        return next(self.occurrences(after), None)

    def upcoming(self, now: dt.datetime, limit: int = 5) -> list[dt.datetime]:
        """The next `limit` occurrences after `now`."""
        return list(itertools.islice(self.occurrences(now), limit))


def to_utc(local: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A local wall-clock time in UTC.

    A time that does not exist (the spring gap) moves forward by the gap (02:30 → 03:30 on the
    day clocks jump from 02:00 to 03:00); a time that exists twice (autumn) is the first of the
    two. This is what zoneinfo does with fold=0, and what people mean by "09:00 every day".
    """
    return local.replace(tzinfo=zone, fold=0).astimezone(dt.UTC)


def local_naive(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """An aware time as naive wall-clock time in `zone`; a naive time is taken as already local."""
    return value if value.tzinfo is None else value.astimezone(zone).replace(tzinfo=None)
