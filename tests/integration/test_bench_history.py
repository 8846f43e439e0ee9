"""The benchmark's history (bench/history.py) and its month drop (bench/retention_drop.py), at a small size:
UUIDv7 ids of their creation time, an equal share in each past month, the database as it was but fuller."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg

from bench import history, retention_drop
from tests.integration.conftest import make_key

JOBS = 1_000


def _app(conn: psycopg.Connection) -> int:
    make_key(conn, "bench")
    return int(conn.execute("SELECT id FROM apps WHERE name = 'bench'").fetchone()[0])  # type: ignore[index]


def _indexes(conn: psycopg.Connection) -> set[tuple[str, bool]]:
    return set(conn.execute("SELECT indexrelid::regclass::text, indisvalid FROM pg_index").fetchall())


def test_months_are_the_calendar_months_before_this_one() -> None:
    assert history.months(dt.date(2026, 3, 15), 4) == [dt.date(2025, 11, 1), dt.date(2025, 12, 1),
                                                       dt.date(2026, 1, 1), dt.date(2026, 2, 1)]


def test_the_load_spreads_uuid7_jobs_over_the_past_months_with_their_rows(
    database_url: str, conn: psycopg.Connection
) -> None:
    app_id = _app(conn)
    indexes = _indexes(conn)

    history.load(database_url, app_id, JOBS)

    rows = conn.execute("SELECT id, created_at, body_purged_at IS NOT NULL, updated_at FROM jobs").fetchall()
    assert len(rows) == JOBS
    for job_id, created_at, _, _ in rows:
        assert job_id.version == 7 and job_id.variant == uuid.RFC_4122
        assert job_id.int >> 80 == int(created_at.timestamp() * 1000)  # its first 48 bits: its time
    months = history.months(dt.datetime.now(dt.UTC).date())
    per_month = {month: 0 for month in months}
    for _, created_at, _, _ in rows:
        per_month[created_at.astimezone(dt.UTC).date().replace(day=1)] += 1
    assert set(per_month.values()) == {JOBS // len(months)}
    month_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30, minutes=5)
    assert all(purged == (updated_at < month_ago) for _, _, purged, updated_at in rows if
               abs(updated_at - month_ago) > dt.timedelta(minutes=10))
    for table, expected in (("recipients", JOBS), ("recipient_addresses", JOBS), ("job_events", 3 * JOBS),
                            ("mailjet_events", JOBS)):
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]  # noqa: S608
        assert count == expected, table
    orphans = conn.execute("""SELECT count(*) FROM mailjet_events AS e LEFT JOIN recipients AS r
                              ON r.id = e.recipient_id AND r.message_id = e.message_id
                              WHERE r.id IS NULL""").fetchone()[0]  # type: ignore[index]
    assert orphans == 0
    after = _indexes(conn)  # (the months the load made have their partitions' indexes too)
    assert indexes <= after and all(valid for _, valid in after)  # every index dropped for the load is back, valid
    disabled = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'jobs'::regclass AND NOT tgisinternal "
                            "AND tgenabled <> 'O'").fetchone()[0]  # type: ignore[index]
    assert disabled == 0
    created = conn.execute("SELECT sum(count) FROM job_counts WHERE kind = 'created'").fetchone()[0]  # type: ignore
    assert created == JOBS  # the counters' trigger fired during the load


def test_a_month_drop_goes_through_every_registered_parent(database_url: str, conn: psycopg.Connection) -> None:
    history.load(database_url, _app(conn), JOBS)
    assert all(valid for _, valid in _indexes(conn))  # a partitioned index is rebuilt on every partition
    month, next_month = history.months(dt.datetime.now(dt.UTC).date())[:2]
    bounds = {"month": month, "next": next_month}
    in_month = """SELECT count(*) FROM recipient_addresses
                  WHERE job_id >= mailer_month_bound('uuid7', %(month)s)::uuid
                    AND job_id < mailer_month_bound('uuid7', %(next)s)::uuid"""
    assert conn.execute(in_month, bounds).fetchone()[0] == JOBS // history.MONTHS  # type: ignore[index]

    got = retention_drop.measure(database_url, month, next_month)

    assert "recipient_addresses" in got.parents and got.dropped == len(got.parents)
    assert conn.execute(in_month, bounds).fetchone()[0] == 0  # type: ignore[index]
    assert conn.execute("SELECT count(*) FROM recipient_addresses").fetchone()[0] == (  # type: ignore[index]
        JOBS - JOBS // history.MONTHS)
    assert got.after.table_bytes < got.before.table_bytes and got.after.index_bytes < got.before.index_bytes
    assert got.after.dead_rows == 0
