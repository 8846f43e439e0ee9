"""Migration 0028_job_partitions on a database that already has jobs: every row lands in its partition."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from mailer.store import migrations, partitions
from mailer.store.queries import SQL_DIR

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def recorded_before_0028(pg_cluster) -> Iterator[tuple[psycopg.Connection, str]]:  # type: ignore[no-untyped-def]
    """As before_0028, with the migrations applied recorded (the last released schema is 0026), and its URL."""
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS jobs_legacy_upgrade")
        admin.execute("CREATE DATABASE jobs_legacy_upgrade")
    url = pg_cluster.url("jobs_legacy_upgrade")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for path in sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
                if path.stem >= "0027":
                    break
                conn.execute(path.read_text())  # type: ignore[arg-type]  # our migration files
                conn.execute("INSERT INTO mailer_migrations (name) VALUES (%s)", (path.stem,))
            yield conn, url
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE jobs_legacy_upgrade WITH (FORCE)")


@pytest.fixture
def before_0028(pg_cluster) -> Iterator[psycopg.Connection]:  # type: ignore[no-untyped-def]
    """A database with the migrations before 0028 applied, as an existing deployment has it."""
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS jobs_upgrade")
        admin.execute("CREATE DATABASE jobs_upgrade")
    try:
        with psycopg.connect(pg_cluster.url("jobs_upgrade"), autocommit=True) as conn:
            for path in sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
                if path.stem >= "0028":
                    break
                conn.execute(path.read_text())  # type: ignore[arg-type]  # our migration files
            yield conn
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE jobs_upgrade WITH (FORCE)")


def made_at(at: dt.datetime, n: int) -> uuid.UUID:
    return uuid.UUID(int=(int(at.timestamp() * 1000) << 80) | (0x7 << 76) | (0x2 << 62) | n)


def add_job(conn: psycopg.Connection, app_id: int, at: dt.datetime, status: str, n: int) -> uuid.UUID:
    job_id = made_at(at, n)
    conn.execute("INSERT INTO jobs (id, app_id, status, priority, message, run_at, created_at)"
                 " VALUES (%s, %s, %s, 'bulk', '{}', %s, %s)", (job_id, app_id, status, at, at))
    conn.execute("INSERT INTO recipients (job_id, kind, position, email, message_id) VALUES (%s, 'to', 0, %s, %s)",
                 (job_id, f"r{n}@example.org", 1000 + n))
    conn.execute("INSERT INTO recipient_addresses (app_id, email, created_at, job_id) VALUES (%s, %s, %s, %s)",
                 (app_id, f"r{n}@example.org", at, job_id))
    conn.execute("INSERT INTO job_events (job_id, type, at) VALUES (%s, %s, %s)", (job_id, status, at))
    return job_id


def test_existing_jobs_move_into_their_partitions_and_everything_keeps_working(before_0028) -> None:
    conn = before_0028
    app = conn.execute(
        "INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'a', '\\x00') RETURNING id").fetchone()[0]  # type: ignore[index]
    old_at = NOW - dt.timedelta(days=200)
    sent = add_job(conn, app, old_at, "sent", 1)
    queued = add_job(conn, app, old_at, "queued", 2)
    recent = add_job(conn, app, NOW, "failed", 3)
    event = conn.execute(
        "INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, payload, recipient_id)"
        " SELECT 'f', 'open', 'opened', now(), '{}', id FROM recipients WHERE job_id = %s RETURNING id", (sent,)
    ).fetchone()
    assert event is not None
    ids_before = conn.execute("SELECT max(id) FROM recipients").fetchone()[0]  # type: ignore[index]

    conn.execute((SQL_DIR / "migrations" / "0028_job_partitions.sql").read_text())  # type: ignore[arg-type]

    def placed(table: str, column: str, job: uuid.UUID) -> str:
        row = conn.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s", (job,)).fetchone()  # noqa: S608  # fixed names
        assert row is not None, (table, job)
        return str(row[0])

    old_month, this_month = f"{old_at:%Y%m}", f"{NOW:%Y%m}"
    assert placed("jobs", "id", sent) == f"jobs_done_p{old_month}"
    assert placed("jobs", "id", queued) == "jobs_live"
    assert placed("jobs", "id", recent) == f"jobs_done_p{this_month}"
    for table in ("recipients", "recipient_addresses", "job_events"):
        assert placed(table, "job_id", sent) == f"{table}_p{old_month}"
        assert placed(table, "job_id", recent) == f"{table}_p{this_month}"
    # every month from the oldest job's to this one was made before the copy; the DEFAULT partitions stay empty
    for table in ("jobs_done_default", "recipients_default", "job_events_default", "recipient_addresses_default"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table  # noqa: S608  # fixed names
    # the identities go on after the old ones; the Mailjet event still names its recipient
    new_id = conn.execute("INSERT INTO recipients (job_id, kind, position, email) VALUES (%s, 'cc', 0, 'x@y.z')"
                          " RETURNING id", (queued,)).fetchone()[0]  # type: ignore[index]
    assert new_id > ids_before
    assert conn.execute("SELECT r.job_id FROM mailjet_events e JOIN recipients r ON r.id = e.recipient_id").fetchone() \
        == (sent,)
    # ending a job moves it to its month; the counters' trigger saw the change; an id cannot be inserted twice
    conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (queued,))
    assert placed("jobs", "id", queued) == f"jobs_done_p{old_month}"
    assert conn.execute("SELECT sum(count) FROM job_counts WHERE kind = 'cancelled'").fetchone() == (1,)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO jobs (id, app_id, status, priority, message, run_at)"
                     " VALUES (%s, %s, 'queued', 'bulk', '{}', now())", (sent, app))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("DELETE FROM job_events WHERE job_id = %s", (sent,))


def month_ahead(n: int) -> dt.date:
    return (NOW.date().replace(day=1) + dt.timedelta(days=31 * n)).replace(day=1)


def random_id_in(month: dt.date, n: int) -> uuid.UUID:
    """A version 4 (random) id whose leading 48 bits happen to read as a time in `month`, as old job ids do."""
    at = dt.datetime(month.year, month.month, 15, tzinfo=dt.UTC)
    return uuid.UUID(int=(int(at.timestamp() * 1000) << 80) | (0x4 << 76) | (0x2 << 62) | n)


def test_an_installation_with_old_random_job_ids_upgrades_in_any_time_zone(recorded_before_0028) -> None:
    conn, url = recorded_before_0028
    app = conn.execute(
        "INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'a', '\\x00') RETURNING id").fetchone()[0]  # type: ignore[index]
    # the oldest job: 23:30 UTC on a month's last day, already the next month in Pacific/Kiritimati (UTC+14)
    evening = (NOW - dt.timedelta(days=100)).replace(day=1, hour=23, minute=30, second=0, microsecond=0) \
        - dt.timedelta(days=1)
    oldest = add_job(conn, app, evening, "sent", 1)
    legacy = {}
    for n, ahead in ((2, 1), (3, 3), (4, 5)):
        legacy[ahead] = random_id_in(month_ahead(ahead), n)
        conn.execute("INSERT INTO jobs (id, app_id, status, priority, message, run_at) "
                     "VALUES (%s, %s, 'sent', 'bulk', '{}', now())", (legacy[ahead], app))
        conn.execute("INSERT INTO job_events (job_id, type) VALUES (%s, 'sent')", (legacy[ahead],))

    applied = migrations.migrate(psycopg.conninfo.make_conninfo(url, options="-c TimeZone=Pacific/Kiritimati"))
    assert "0028_job_partitions" in applied and "0029_time_partitioned_history" in applied

    def placed(table: str, column: str, job: uuid.UUID) -> str:
        row = conn.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s", (job,)).fetchone()  # noqa: S608  # fixed names
        assert row is not None, (table, job)
        return str(row[0])

    assert placed("jobs", "id", oldest) == f"jobs_done_p{evening:%Y%m}"
    for (parent,) in conn.execute("SELECT parent::text FROM month_partitioned_tables").fetchall():
        made = {month for _, month in partitions.month_partitions(conn, parent)}
        assert {month_ahead(n) for n in range(4)} <= made, parent
    for ahead in (1, 3):
        assert placed("jobs", "id", legacy[ahead]) == f"jobs_done_p{month_ahead(ahead):%Y%m}"
        assert placed("job_events", "job_id", legacy[ahead]) == f"job_events_p{month_ahead(ahead):%Y%m}"
    assert placed("jobs", "id", legacy[5]) == "jobs_done_default"
    # when the calendar reaches that month, its partitions are made and the old job moves into them
    with conn.transaction():
        made, failed = partitions.ensure_registered_partitions(conn, month_ahead(4), ahead=1, lock_timeout_ms=1000)
    assert failed == [] and made > 0
    assert placed("jobs", "id", legacy[5]) == f"jobs_done_p{month_ahead(5):%Y%m}"
    assert placed("job_events", "job_id", legacy[5]) == f"job_events_p{month_ahead(5):%Y%m}"
