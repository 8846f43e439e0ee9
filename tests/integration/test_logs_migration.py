"""Migration 0004_logs_stats on a database that already has jobs: counters and addresses are filled in."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from mailer.store.queries import SQL_DIR

DAY1 = dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 3, 2, 0, 30, tzinfo=dt.UTC)


@pytest.fixture
def before_0004(pg_cluster) -> Iterator[psycopg.Connection]:  # type: ignore[no-untyped-def]
    """A database with the migrations before 0004 applied, as an existing deployment has it."""
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS logs_upgrade")
        admin.execute("CREATE DATABASE logs_upgrade")
    try:
        with psycopg.connect(pg_cluster.url("logs_upgrade"), autocommit=True) as conn:
            for path in sorted((SQL_DIR / "migrations").glob("000[0-3]_*.sql")):
                conn.execute(path.read_text())  # type: ignore[arg-type]  # our migration files
            yield conn
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE logs_upgrade WITH (FORCE)")


def add_job(conn: psycopg.Connection, app_id: int, created_at: dt.datetime, events: list[tuple[str, dt.datetime]],
            emails: list[str]) -> uuid.UUID:
    job_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO jobs (id, app_id, status, priority, message, run_at, created_at)"
        " VALUES (%s, %s, %s, 'bulk', '{}', %s, %s)",
        (job_id, app_id, events[-1][0] if events else "queued", created_at, created_at),
    )
    for position, email in enumerate(emails):
        conn.execute("INSERT INTO recipients (job_id, kind, position, email) VALUES (%s, 'to', %s, %s)",
                     (job_id, position, email))
    conn.execute("INSERT INTO job_events (job_id, type, at) VALUES (%s, 'queued', %s)", (job_id, created_at))
    for kind, at in events:
        conn.execute("INSERT INTO job_events (job_id, type, at) VALUES (%s, %s, %s)", (job_id, kind, at))
    return job_id


def test_existing_jobs_are_counted_and_their_addresses_indexed(before_0004: psycopg.Connection) -> None:
    conn = before_0004
    apps = [conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES (%s, %s, '\\x00') RETURNING id",
                         (name, name)).fetchone()[0] for name in ("a", "b")]  # type: ignore[index]
    retried = add_job(conn, apps[0], DAY1, [("sending", DAY1), ("failed", DAY1), ("retried", DAY2),
                                            ("sending", DAY2), ("sent", DAY2)], ["Ann@Example.org", "ann@example.org"])
    add_job(conn, apps[0], DAY1, [("cancelled", DAY2)], ["bob@example.org"])
    add_job(conn, apps[0], DAY2, [], ["bob@example.org"])
    add_job(conn, apps[1], DAY2, [("suppressed", DAY2)], ["ann@example.org"])

    conn.execute((SQL_DIR / "migrations" / "0004_logs_stats.sql").read_text())  # type: ignore[arg-type]

    counts = conn.execute(
        "SELECT app_id, day::text, kind, sum(count)::int FROM job_counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).fetchall()
    assert counts == [
        (apps[0], "2026-03-01", "created", 2), (apps[0], "2026-03-01", "failed", 1),
        (apps[0], "2026-03-02", "cancelled", 1), (apps[0], "2026-03-02", "created", 1),
        (apps[0], "2026-03-02", "sent", 1),
        (apps[1], "2026-03-02", "created", 1), (apps[1], "2026-03-02", "suppressed", 1),
    ]
    addresses = conn.execute(
        "SELECT app_id, email, count(*) FROM recipient_addresses GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert addresses == [(apps[0], "ann@example.org", 1), (apps[0], "bob@example.org", 2),
                         (apps[1], "ann@example.org", 1)]
    assert conn.execute("SELECT created_at FROM recipient_addresses WHERE job_id = %s", (retried,)).fetchone() == (
        DAY1,
    )
    # and from now on the triggers keep both up to date
    add_job(conn, apps[1], DAY2, [], ["cy@example.org"])
    assert conn.execute(
        "SELECT sum(count)::int FROM job_counts WHERE app_id = %s AND day = '2026-03-02' AND kind = 'created'",
        (apps[1],),
    ).fetchone() == (2,)
    assert conn.execute("SELECT count(*) FROM recipient_addresses WHERE email = 'cy@example.org'").fetchone() == (1,)
