"""GET /stats: the app's counters per UTC day, every day of the range (zeros too), oldest first."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from tests.integration.conftest import make_key
from tests.integration.test_logs_api import _not_at_midnight, app_id_of, queue  # noqa: F401  # fixture too

KINDS = ["date", "created", "sent", "failed", "suppressed", "cancelled",
         "delivered", "opened", "clicked", "bounced", "blocked", "spam", "unsubscribed", "rates"]
NO_ENGAGEMENT = {"delivered": 0, "opened": 0, "clicked": 0, "bounced": 0, "blocked": 0, "spam": 0, "unsubscribed": 0,
                 "rates": dict.fromkeys(("opened", "clicked", "bounced", "blocked", "spam", "unsubscribed"))}


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def get_stats(client, auth, query: str = "") -> list[dict]:  # type: ignore[no-untyped-def]
    response = client.get(f"/stats{query}", headers=auth)
    assert response.status_code == 200, response.json
    assert list(response.json) == ["days", "totals"]
    for day in response.json["days"]:
        assert list(day) == KINDS
    return response.json["days"]


def add_job(conn: psycopg.Connection, app_id: int, created_at: dt.datetime, status: str = "queued") -> uuid.UUID:
    job_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO jobs (id, app_id, status, priority, message, run_at, created_at, updated_at)"
        " VALUES (%s, %s, 'queued', 'bulk', '{}', %s, %s, %s)", (job_id, app_id, created_at, created_at, created_at)
    )
    if status != "queued":
        conn.execute("UPDATE jobs SET status = %s WHERE id = %s", (status, job_id))
    return job_id


def test_the_last_14_days_by_default_zeros_included_oldest_first(client, auth) -> None:
    queue(client, auth)
    days = get_stats(client, auth)
    expected = [(today() - dt.timedelta(days=n)).isoformat() for n in range(13, -1, -1)]
    assert [day["date"] for day in days] == expected
    assert days[-1] == {"date": today().isoformat(), "created": 1, "sent": 0, "failed": 0, "suppressed": 0,
                        "cancelled": 0, **NO_ENGAGEMENT}
    assert all(day | {"date": None} == dict.fromkeys(KINDS, 0) | NO_ENGAGEMENT | {"date": None} for day in days[:-1])


def test_counts_per_day_and_status(client, auth, conn) -> None:
    app_id = app_id_of(conn)
    march = [dt.datetime(2026, 3, day, 12, tzinfo=dt.UTC) for day in range(1, 6)]
    for _ in range(3):
        add_job(conn, app_id, march[0])
    add_job(conn, app_id, march[2])
    add_job(conn, app_id, dt.datetime(2026, 3, 3, 23, 59, 59, 999999, tzinfo=dt.UTC))
    add_job(conn, app_id, dt.datetime(2026, 3, 4, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))))  # 3 March UTC

    days = get_stats(client, auth, "?since=2026-02-28&until=2026-03-05")

    assert [(day["date"], day["created"]) for day in days] == [
        ("2026-02-28", 0), ("2026-03-01", 3), ("2026-03-02", 0), ("2026-03-03", 3), ("2026-03-04", 0),
        ("2026-03-05", 0),
    ]
    # Status changes count on the day they happen: today, outside this range.
    assert all(day["sent"] == day["failed"] == 0 for day in days)


def test_every_final_status_has_its_column(client, auth, conn) -> None:
    app_id = app_id_of(conn)
    now = dt.datetime.now(dt.UTC)
    for status, count in (("sent", 4), ("failed", 3), ("suppressed", 2), ("cancelled", 1)):
        for _ in range(count):
            add_job(conn, app_id, now, status)
    [day] = get_stats(client, auth, f"?since={today()}&until={today()}")
    assert day == {"date": today().isoformat(), "created": 10, "sent": 4, "failed": 3, "suppressed": 2,
                   "cancelled": 1, **NO_ENGAGEMENT}


def test_only_since_or_only_until(client, auth) -> None:
    assert [d["date"] for d in get_stats(client, auth, "?until=2026-03-14")] == [
        f"2026-03-{day:02}" for day in range(1, 15)
    ]
    since = today() - dt.timedelta(days=2)
    assert [d["date"] for d in get_stats(client, auth, f"?since={since}")] == [
        (since + dt.timedelta(days=n)).isoformat() for n in range(3)
    ]
    assert len(get_stats(client, auth, "?since=2025-03-01&until=2026-03-01")) == 366
    assert [d["date"] for d in get_stats(client, auth, "?since=2099-01-01&until=2099-01-01")] == ["2099-01-01"]


def test_only_the_callers_counts(client, auth, conn) -> None:
    queue(client, auth)
    other = {"Authorization": f"Bearer {make_key(conn, 'other-app')}"}
    for _ in range(2):
        queue(client, other)
    assert get_stats(client, auth)[-1]["created"] == 1
    assert get_stats(client, other)[-1]["created"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?since=yesterday", "since"),
        ("?since=2026-11-22T00:00:00Z", "since"),  # days only
        ("?until=2026-02-30", "until"),
        ("?until=20261122", "until"),
        ("?since=", "since"),
        ("?since=2026-03-02&until=2026-03-01", "since"),
        ("?since=2025-02-28&until=2026-03-01", "since"),  # 367 days
        ("?since=0001-01-01&until=9999-12-31", "since"),
        ("?limit=10", "limit"),
        ("?since=2026-03-01&since=2026-03-02", "since"),
    ],
)
def test_a_bad_query_is_422_naming_the_parameter(client, auth, query, field) -> None:
    response = client.get(f"/stats{query}", headers=auth)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_error"
    assert field in response.json["error"]["details"]


def test_the_default_range_stops_at_the_first_day_there_is(client, auth) -> None:
    assert [d["date"] for d in get_stats(client, auth, "?until=0001-01-03")] == [
        "0001-01-01", "0001-01-02", "0001-01-03"
    ]
    assert len(get_stats(client, auth, "?since=9999-12-30&until=9999-12-31")) == 2
