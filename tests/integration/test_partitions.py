"""Month partitions (migration 0027): bounds, creation ahead, listing and dropping, on a scratch parent."""

from __future__ import annotations

import datetime
import uuid

import psycopg
import pytest

from mailer.config import Settings
from mailer.domain import ids
from mailer.services import partitions
from mailer.store import partitions as store

D = datetime.date


@pytest.fixture
def scratch(conn: psycopg.Connection) -> psycopg.Connection:
    """Two registered parents of the two kinds, in a test database otherwise as migrated."""
    conn.execute("CREATE TABLE scratch_by_id (id uuid NOT NULL) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE scratch_by_time (at timestamptz NOT NULL) PARTITION BY RANGE (at)")
    conn.execute("INSERT INTO month_partitioned_tables VALUES ('scratch_by_id', 'uuid7'), ('scratch_by_time', 'time')")
    return conn


def test_a_uuid7_bound_is_the_smallest_id_made_in_that_month(conn):
    bound = conn.execute("SELECT mailer_month_bound('uuid7', '2026-12-17')").fetchone()[0]
    start = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    assert uuid.UUID(bound).int >> 80 == int(start.timestamp() * 1000)
    assert uuid.UUID(bound).int & ((1 << 80) - 1) == 0
    made = ids.uuid7()
    assert conn.execute("SELECT %s::uuid >= mailer_month_bound('uuid7', now()::date)::uuid", (made,)).fetchone()[0]


def test_a_time_bound_is_midnight_utc_of_the_first_day(conn):
    bound = conn.execute("SELECT mailer_month_bound('time', '2027-02-28')::timestamptz").fetchone()[0]
    assert bound == datetime.datetime(2027, 2, 1, tzinfo=datetime.UTC)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT mailer_month_bound('weekly', '2027-02-28')")


def test_months_are_created_once_and_listed_oldest_first(scratch):
    assert store.ensure_month_partitions(scratch, "scratch_by_time", "time", D(2026, 11, 1), D(2027, 1, 1)) == 3
    assert store.ensure_month_partitions(scratch, "scratch_by_time", "time", D(2026, 12, 1), D(2027, 2, 1)) == 1
    assert store.month_partitions(scratch, "scratch_by_time") == [
        ("scratch_by_time_p202611", D(2026, 11, 1)), ("scratch_by_time_p202612", D(2026, 12, 1)),
        ("scratch_by_time_p202701", D(2027, 1, 1)), ("scratch_by_time_p202702", D(2027, 2, 1)),
    ]
    scratch.execute("INSERT INTO scratch_by_time VALUES ('2026-12-31 23:59:59.999+00'), ('2027-01-01 00:00+00')")
    placed = scratch.execute("SELECT tableoid::regclass::text FROM scratch_by_time ORDER BY at").fetchall()
    assert [row[0] for row in placed] == ["scratch_by_time_p202612", "scratch_by_time_p202701"]


def test_an_id_lands_in_the_month_it_was_made(scratch):
    store.ensure_month_partitions(scratch, "scratch_by_id", "uuid7", D(2026, 1, 1), D(2026, 12, 1))
    made_at = datetime.datetime(2026, 7, 31, 23, 59, 59, 999_000, tzinfo=datetime.UTC)
    job_id = uuid.UUID(int=(int(made_at.timestamp() * 1000) << 80) | (0x7 << 76) | (0x2 << 62) | 12345)
    scratch.execute("INSERT INTO scratch_by_id VALUES (%s)", (job_id,))
    placed = scratch.execute("SELECT tableoid::regclass::text FROM scratch_by_id").fetchone()[0]
    assert placed == "scratch_by_id_p202607"


def test_housekeeping_keeps_every_registered_parent_ahead(scratch):
    settings = Settings.from_env({"MAILER_PARTITIONS_AHEAD_MONTHS": "2"})
    done = partitions.maintain(scratch, settings, now=datetime.datetime(2027, 5, 10, tzinfo=datetime.UTC))
    months = [month for _, month in store.month_partitions(scratch, "scratch_by_id")]
    assert months == [D(2027, 4, 1), D(2027, 5, 1), D(2027, 6, 1), D(2027, 7, 1)]
    assert [m for _, m in store.month_partitions(scratch, "scratch_by_time")] == months
    assert done.created >= 8  # (the real history tables registered by later migrations add theirs)
    again = partitions.maintain(scratch, settings, now=datetime.datetime(2027, 5, 10, tzinfo=datetime.UTC))
    assert again.created == 0


def test_migrate_left_this_month_and_three_ahead_for_every_registered_parent(conn):
    today = datetime.datetime.now(datetime.UTC).date().replace(day=1)
    for (parent,) in conn.execute("SELECT parent::text FROM month_partitioned_tables").fetchall():
        months = {month for _, month in store.month_partitions(conn, parent)}
        assert today in months and (today + datetime.timedelta(days=95)).replace(day=1) in months, parent


def test_a_month_is_dropped_whole_and_a_missing_one_is_no_error(scratch):
    store.ensure_month_partitions(scratch, "scratch_by_time", "time", D(2026, 1, 1), D(2026, 2, 1))
    scratch.execute("INSERT INTO scratch_by_time SELECT '2026-01-01'::timestamptz + g * interval '1 minute'"
                    " FROM generate_series(0, 999) AS g")
    assert store.drop_month_partition(scratch, "scratch_by_time", D(2026, 1, 1), lock_timeout_ms=1000) is True
    assert store.drop_month_partition(scratch, "scratch_by_time", D(2026, 1, 1), lock_timeout_ms=1000) is False
    assert scratch.execute("SELECT count(*) FROM scratch_by_time").fetchone()[0] == 0
    assert [m for _, m in store.month_partitions(scratch, "scratch_by_time")] == [D(2026, 2, 1)]


def test_a_drop_gives_up_when_a_reader_holds_the_parent(scratch, database_url):
    store.ensure_month_partitions(scratch, "scratch_by_time", "time", D(2026, 1, 1), D(2026, 1, 1))
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM scratch_by_time")  # holds ACCESS SHARE until it ends
        with pytest.raises(psycopg.errors.LockNotAvailable):
            store.drop_month_partition(scratch, "scratch_by_time", D(2026, 1, 1), lock_timeout_ms=100)
    assert store.drop_month_partition(scratch, "scratch_by_time", D(2026, 1, 1), lock_timeout_ms=1000) is True


def test_the_hourly_task_maintains_partitions(scratch, settings):
    import types

    from mailer import db, jobqueue, tasks

    pool = db.create_pool(settings, name="test")
    try:
        pool.wait()
        runtime = types.SimpleNamespace(pool=pool, settings=settings)
        tasks.maintain_partitions(types.SimpleNamespace(additional_context={"runtime": runtime}), timestamp=0)
    finally:
        pool.close()
    this_month = datetime.datetime.now(datetime.UTC).date().replace(day=1)
    assert this_month in {month for _, month in store.month_partitions(scratch, "scratch_by_time")}
    periodic = {task.periodic_id: task for task in jobqueue.app.periodic_registry.periodic_tasks.values()}
    assert periodic["partitions"].task.name == "mailer.maintain_partitions"
    assert periodic["partitions"].task.queue == "housekeeping"


def random_id_made_in(month: datetime.date, n: int) -> uuid.UUID:
    """A version 4 (random) id whose leading 48 bits happen to read as a time in `month`, as old job ids do."""
    at = datetime.datetime(month.year, month.month, 15, tzinfo=datetime.UTC)
    return uuid.UUID(int=(int(at.timestamp() * 1000) << 80) | (0x4 << 76) | (0x2 << 62) | n)


def test_a_month_is_made_even_when_the_default_partition_holds_rows_of_it(scratch):
    scratch.execute("CREATE TABLE scratch_by_id_default PARTITION OF scratch_by_id DEFAULT")
    stray, other = random_id_made_in(D(2027, 6, 1), 1), random_id_made_in(D(2031, 1, 1), 2)
    scratch.execute("INSERT INTO scratch_by_id VALUES (%s), (%s)", (stray, other))
    assert store.ensure_month_partitions(scratch, "scratch_by_id", "uuid7", D(2027, 5, 1), D(2027, 7, 1)) == 3
    placed = dict(scratch.execute("SELECT id, tableoid::regclass::text FROM scratch_by_id").fetchall())
    assert placed == {stray: "scratch_by_id_p202706", other: "scratch_by_id_default"}
    scratch.execute("INSERT INTO scratch_by_id VALUES (%s)", (random_id_made_in(D(2027, 6, 1), 3),))
    assert scratch.execute("SELECT count(*) FROM scratch_by_id_p202706").fetchone()[0] == 2


def test_an_audit_row_of_an_old_random_job_id_moves_and_the_audit_stays_append_only(conn):
    month = D(2035, 3, 1)  # far beyond the months migrate made: only the old random id is in it
    job_id = random_id_made_in(month, 7)
    conn.execute("INSERT INTO job_events (job_id, type, at) VALUES (%s, 'sent', now())", (job_id,))
    assert conn.execute("SELECT tableoid::regclass::text FROM job_events WHERE job_id = %s",
                        (job_id,)).fetchone()[0] == "job_events_default"
    with conn.transaction():
        assert store.ensure_month_partitions(conn, "job_events", "uuid7", month, month) == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"), conn.transaction():
            conn.execute("DELETE FROM job_events WHERE job_id = %s", (job_id,))
    assert conn.execute("SELECT tableoid::regclass::text FROM job_events WHERE job_id = %s",
                        (job_id,)).fetchone()[0] == "job_events_p203503"
    # the attached month has the parent's indexes and triggers
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'job_events_p203503'").fetchone()[0] >= 2
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("DELETE FROM job_events_p203503")


def test_one_parent_that_fails_does_not_stop_the_others(scratch, caplog):
    # a time-keyed parent registered as keyed by id: its bounds are not timestamps, so its months always fail
    scratch.execute("CREATE TABLE scratch_aaa_broken (at timestamptz NOT NULL) PARTITION BY RANGE (at)")
    scratch.execute("INSERT INTO month_partitioned_tables VALUES ('scratch_aaa_broken', 'uuid7')")
    settings = Settings.from_env({"MAILER_PARTITIONS_AHEAD_MONTHS": "1"})
    with caplog.at_level("WARNING", logger="mailer.services.partitions"):
        done = partitions.maintain(scratch, settings, now=datetime.datetime(2032, 5, 10, tzinfo=datetime.UTC))
    assert done.failed == ("scratch_aaa_broken",)
    assert "scratch_aaa_broken" in caplog.text
    assert store.month_partitions(scratch, "scratch_aaa_broken") == []
    expected = [D(2032, 4, 1), D(2032, 5, 1), D(2032, 6, 1)]
    for parent in ("scratch_by_id", "scratch_by_time", "webhook_messages", "jobs_done"):
        assert [m for _, m in store.month_partitions(scratch, parent) if m >= D(2032, 1, 1)] == expected, parent


def test_a_parent_locked_by_a_reader_is_skipped_within_the_lock_timeout(scratch, database_url):
    settings = Settings.from_env({"MAILER_PARTITIONS_AHEAD_MONTHS": "1", "MAILER_PARTITION_LOCK_TIMEOUT_MS": "100"})
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM scratch_by_time")  # holds ACCESS SHARE until it ends
        done = partitions.maintain(scratch, settings, now=datetime.datetime(2033, 5, 10, tzinfo=datetime.UTC))
    assert done.failed == ("scratch_by_time",)
    assert [m for _, m in store.month_partitions(scratch, "scratch_by_id")] == [D(2033, 4, 1), D(2033, 5, 1),
                                                                                 D(2033, 6, 1)]
