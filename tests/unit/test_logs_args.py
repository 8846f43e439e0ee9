"""The query strings of GET /logs and /stats, and the log cursor, without a database."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from marshmallow import ValidationError

from mailer.api import schemas
from mailer.services import logs

UTC = dt.UTC


def load_logs(**args: str) -> dict:
    return schemas.LogsArgs().load(args)


def test_the_cursor_round_trips_to_the_microsecond() -> None:
    created_at = dt.datetime(2026, 11, 22, 9, 30, 1, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    job_id = uuid.uuid4()
    cursor = logs.encode_cursor(created_at, job_id)
    assert cursor.isascii() and "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert logs.decode_cursor(cursor) == (created_at, job_id)
    assert load_logs(cursor=cursor)["cursor"] == (created_at, job_id)


def test_defaults() -> None:
    assert load_logs() == {"limit": 50, "cursor": None, "status": None, "recipient": None, "since": None,
                           "until": None, "metadata": None}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1001", 1001),
        ("10.5", 10.5),
        ('"1001"', "1001"),
        ("true", True),
        ("null", None),
        ("spring sale", "spring sale"),
        ("NaN", "NaN"),  # not JSON for us: the text
        ('["a"]', ["a"]),
        ('{"id": 5}', {"id": 5}),
        ("{not json", "{not json"),
        ("", ""),
    ],
)
def test_metadata_values_are_json_or_else_text(raw: str, value: object) -> None:
    assert load_logs(**{"metadata.k": raw})["metadata"] == {"k": value}


def test_metadata_keys_keep_their_dots_and_combine() -> None:
    assert load_logs(**{"metadata.a.b": "1", "metadata.c": "x"})["metadata"] == {"a.b": 1, "c": "x"}


@pytest.mark.parametrize(
    ("since", "until", "bounds"),
    [
        ("2026-03-02", "2026-03-02", (dt.datetime(2026, 3, 2, tzinfo=UTC), dt.datetime(2026, 3, 3, tzinfo=UTC))),
        ("2026-03-02T10:00:00.5+01:00", "2026-03-02T10:00:01Z",
         (dt.datetime(2026, 3, 2, 9, 0, 0, 500000, tzinfo=UTC), dt.datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC))),
        ("2026-03-02t10:00:00z", "9999-12-31", (dt.datetime(2026, 3, 2, 10, tzinfo=UTC), None)),
        ("2026-03-02T10:00:00.1234567891Z", "2026-03-02T16:00:00 05:00",  # space: an unencoded '+'
         (dt.datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC), dt.datetime(2026, 3, 2, 11, tzinfo=UTC))),
    ],
)
def test_since_and_until_become_instants_until_excluded(since: str, until: str, bounds: tuple) -> None:
    loaded = load_logs(since=since, until=until)
    assert (loaded["since"], loaded["until"]) == bounds


@pytest.mark.parametrize("value", ["2026-03-02T10:00:00", "2026-03-02 10:00:00Z", "2026-3-2", "2026-03-02T1:00:00Z",
                                   "\u0662\u0660\u0662\u0666-03-02", "2026-03-02T10:00:00+1:00", "now"])
def test_times_that_are_not_rfc3339_with_offset_or_a_day(value: str) -> None:
    with pytest.raises(ValidationError) as error:
        load_logs(since=value)
    assert set(error.value.messages) == {"since"}


def test_stats_default_to_the_last_14_days_and_at_most_366() -> None:
    today = dt.datetime.now(UTC).date()
    assert schemas.StatsArgs().load({}) == {"since": today - dt.timedelta(days=13), "until": today}
    assert schemas.StatsArgs().load({"until": "2026-03-14"}) == {"since": dt.date(2026, 3, 1),
                                                                 "until": dt.date(2026, 3, 14)}
    assert schemas.StatsArgs().load({"since": "2025-03-01", "until": "2026-03-01"})["since"] == dt.date(2025, 3, 1)
    with pytest.raises(ValidationError):
        schemas.StatsArgs().load({"since": "2025-02-28", "until": "2026-03-01"})
