"""Retention: bodies purged in batches with a budget; months of old jobs dropped whole with what hangs off them."""

from __future__ import annotations

import copy
import datetime
import itertools
import random
import types
import uuid
from typing import Any

import psycopg
import pytest

from mailer import db, metrics
from mailer.config import Settings
from mailer.services import queueing, retention
from mailer.store import partitions as partitions_store
from tests.integration.webhooks_support import expand, register

MESSAGE: dict[str, Any] = {
    "from": {"email": "billing@example.com", "name": "Billing"},
    "to": [{"email": "ann@example.org", "name": "Ann"}],
    "cc": [{"email": "cc@example.org"}],
    "subject": "Your invoice",
    "text": "the secret text",
    "html": "<p>the secret html</p>",
    "variables": {"name": "Ann"},
    "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "content": "UERGIGJvZHk="}],
    "headers": {"X-Order": "1001"},
}
POLICY = retention.Policy(body_days=30, days=365, batch=1000)


def app_id(conn: psycopg.Connection, name: str = "billing") -> int:
    row = conn.execute("SELECT id FROM apps WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def make_jobs(conn: psycopg.Connection, app: int, count: int = 1, **options: Any) -> list[uuid.UUID]:
    jobs = [queueing.NewJob(message=copy.deepcopy(MESSAGE), **options) for _ in range(count)]
    with conn.transaction():
        queueing.insert(conn, app, jobs, 50)
    return [job.id for job in jobs]


def age(conn: psycopg.Connection, job_ids: list[uuid.UUID], *, status: str, days: int) -> None:
    """Put jobs in `status`, last changed `days` ago (as if they had ended then)."""
    conn.execute(
        "UPDATE jobs SET status = %s, updated_at = now() - make_interval(days => %s) WHERE id = ANY(%s)",
        (status, days, job_ids),
    )


def message_of(conn: psycopg.Connection, job_id: uuid.UUID) -> tuple[dict[str, Any], Any]:
    row = conn.execute("SELECT message, body_purged_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def count(conn: psycopg.Connection, sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


# --- bodies ------------------------------------------------------------------------------------------


def test_bodies_are_purged_only_for_final_jobs_past_the_body_horizon(client, auth, conn) -> None:
    app = app_id(conn)
    old_sent, old_failed, recent_sent, old_queued, old_cancelled = (make_jobs(conn, app)[0] for _ in range(5))
    age(conn, [old_sent], status="sent", days=31)
    age(conn, [old_failed], status="failed", days=40)
    age(conn, [old_cancelled], status="cancelled", days=400)
    age(conn, [recent_sent], status="sent", days=29)
    age(conn, [old_queued], status="queued", days=40)
    conn.execute("INSERT INTO job_events (job_id, type) VALUES (%s, 'sent')", (old_sent,))
    before = {job: client.get(f"/status/{job}", headers=auth).json for job in (old_sent, old_failed)}

    removed = retention.run(conn, POLICY)

    assert removed.bodies_purged == 3
    for job in (old_sent, old_failed):
        message, purged_at = message_of(conn, job)
        assert purged_at is not None
        assert message == {
            "from": MESSAGE["from"], "to": MESSAGE["to"], "cc": MESSAGE["cc"], "subject": "Your invoice",
            "headers": {"X-Order": "1001"}, "attachments": [{"filename": "a.pdf", "content_type": "application/pdf"}],
        }
        # status, recipients and both audit trails are untouched
        assert client.get(f"/status/{job}", headers=auth).json == before[job]
    for job in (recent_sent, old_queued):
        assert message_of(conn, job) == (MESSAGE, None)
    assert client.get(f"/status/{old_sent}", headers=auth).json["events"][-1]["type"] == "sent"


def test_a_purged_failed_job_cannot_be_retried(client, auth, conn) -> None:
    job = make_jobs(conn, app_id(conn))[0]
    age(conn, [job], status="failed", days=31)
    retention.run(conn, POLICY)
    response = client.post(f"/queue/{job}/retry", headers=auth)
    assert response.status_code == 409
    assert response.json["error"]["details"] == {"status": "failed", "body_purged": True}
    assert client.get(f"/status/{job}", headers=auth).json["status"] == "failed"


def test_a_body_without_attachments_or_html_is_purged_too(conn, api_key) -> None:
    app = app_id(conn)
    message = {"from": {"email": "a@example.com"}, "to": [{"email": "b@example.org"}], "subject": "s", "text": "t"}
    job = queueing.NewJob(message=message)
    with conn.transaction():
        queueing.insert(conn, app, [job], 50)
    age(conn, [job.id], status="sent", days=31)
    retention.run(conn, POLICY)
    purged, purged_at = message_of(conn, job.id)
    assert purged == {"from": {"email": "a@example.com"}, "to": [{"email": "b@example.org"}], "subject": "s"}
    assert purged_at is not None


# --- dropping old months of jobs ------------------------------------------------------------------------

SETTINGS = Settings.from_env({"MAILER_RETENTION_BODY_DAYS": "30", "MAILER_RETENTION_DAYS": "365"})
NOW = datetime.datetime.now(datetime.UTC)


def made_at(at: datetime.datetime) -> uuid.UUID:
    """A UUIDv7 job id made at `at` (domain/ids.py's layout)."""
    milliseconds = int(at.timestamp() * 1000)
    return uuid.UUID(int=(milliseconds << 80) | (0x7 << 76) | (random.getrandbits(12) << 64) | (0x2 << 62)
                     | random.getrandbits(62))


def month_of(at: datetime.datetime) -> datetime.date:
    return at.date().replace(day=1)


def make_jobs_made_at(conn: psycopg.Connection, app: int, at: datetime.datetime, count: int = 1) -> list[uuid.UUID]:
    """Jobs whose ids were made at `at`, in that month's partitions (made here, as they were back then)."""
    for table in retention.JOB_MONTH_TABLES:
        partitions_store.ensure_month_partitions(conn, table, "uuid7", month_of(at), month_of(at))
    jobs = [queueing.NewJob(message=copy.deepcopy(MESSAGE), id=made_at(at)) for _ in range(count)]
    with conn.transaction():
        queueing.insert(conn, app, jobs, 50)
    return [job.id for job in jobs]


def attach_everything(conn: psycopg.Connection, job: uuid.UUID, endpoint: uuid.UUID) -> None:
    """Mailjet events, a webhook message with its delivery and attempt, a schedule occurrence."""
    conn.execute("UPDATE recipients SET message_id = 1000 + position, status = 'sent' WHERE job_id = %s", (job,))
    conn.execute(
        """INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, email, payload,
                                       recipient_id, applied_at)
           SELECT md5(random()::text), 'sent', 'delivered', now(), message_id, email, '{}', id, now()
           FROM recipients WHERE job_id = %s""",
        (job,),
    )
    expand(conn)
    conn.execute(
        """INSERT INTO webhook_attempts (delivery_id, message_created_at, attempted_at, status_code, latency_ms)
           SELECT d.id, d.message_created_at, now(), 200, 5 FROM webhook_deliveries d
           JOIN webhook_messages m ON m.id = d.message_id JOIN recipients r ON r.id = m.recipient_id
           WHERE r.job_id = %s AND d.endpoint_id = %s""",
        (job, endpoint),
    )
    conn.execute("UPDATE webhook_deliveries SET status = 'succeeded'")
    conn.execute(
        "INSERT INTO schedule_occurrences (schedule_id, occurs_at, job_id) VALUES (%s, now(), %s)", (uuid.uuid4(), job)
    )


ROWS_OF_A_JOB = {
    "jobs": "SELECT count(*) FROM jobs WHERE id = %s",
    "recipients": "SELECT count(*) FROM recipients WHERE job_id = %s",
    "recipient_addresses": "SELECT count(*) FROM recipient_addresses WHERE job_id = %s",
    "job_events": "SELECT count(*) FROM job_events WHERE job_id = %s",
    "schedule_occurrences": "SELECT count(*) FROM schedule_occurrences WHERE job_id = %s",
}


def rows_of(conn: psycopg.Connection, job: uuid.UUID) -> dict[str, int]:
    return {name: count(conn, sql, job) for name, sql in ROWS_OF_A_JOB.items()}


def job_counts(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    sql = "SELECT app_id, day, kind, sum(count) FROM job_counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    return conn.execute(sql).fetchall()


def months_kept(conn: psycopg.Connection) -> dict[str, set[datetime.date]]:
    return {table: {month for _, month in partitions_store.month_partitions(conn, table)}
            for table in retention.JOB_MONTH_TABLES}


def test_a_month_past_the_horizon_is_dropped_whole_with_its_jobs_story_and_nothing_newer(conn, api_key) -> None:
    app = app_id(conn)
    endpoint = conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret) VALUES (%s, 'http://127.0.0.1:9/h', '{*}', "
        "'whsec_x') RETURNING id",
        (app,),
    ).fetchone()[0]  # type: ignore[index]
    old_at, kept_at = NOW - datetime.timedelta(days=420), NOW - datetime.timedelta(days=330)
    old, kept = make_jobs_made_at(conn, app, old_at)[0], make_jobs_made_at(conn, app, kept_at)[0]
    for job, ended_days_ago in ((old, 400), (kept, 300)):
        attach_everything(conn, job, endpoint)
        age(conn, [job], status="sent", days=ended_days_ago)
    everything = {"jobs": 1, "recipients": 2, "recipient_addresses": 2, "job_events": 1, "schedule_occurrences": 1}
    assert rows_of(conn, old) == everything == rows_of(conn, kept)
    assert all(month_of(old_at) in months for months in months_kept(conn).values())
    counters = job_counts(conn)
    others = {table: count(conn, f"SELECT count(*) FROM {table}")  # noqa: S608  # fixed names
              for table in ("mailjet_events", "webhook_messages", "webhook_deliveries", "webhook_attempts")}

    dropped = retention.drop_expired_partitions(conn, SETTINGS, NOW)

    assert dropped == len(retention.JOB_MONTH_TABLES)
    assert rows_of(conn, old) == dict.fromkeys(everything, 0)
    assert rows_of(conn, kept) == everything
    assert all(month_of(old_at) not in months and month_of(kept_at) in months
               for months in months_kept(conn).values())
    assert job_counts(conn) == counters  # the counters are history
    # Mailjet events and webhook messages expire by their own age (no foreign key to recipients any more)
    assert {table: count(conn, f"SELECT count(*) FROM {table}") for table in others} == others  # noqa: S608
    assert retention.drop_expired_partitions(conn, SETTINGS, NOW) == 0


def test_a_month_waits_while_a_job_made_then_is_still_live(conn, api_key) -> None:
    app = app_id(conn)
    old_at = NOW - datetime.timedelta(days=420)
    ended, waiting = make_jobs_made_at(conn, app, old_at, count=2)
    age(conn, [ended], status="sent", days=400)
    age(conn, [waiting], status="scheduled", days=400)  # a job sent far in the future: never dropped while it waits
    waits = metrics.RETENTION_MONTHS_WAITING._value.get()

    assert retention.drop_expired_partitions(conn, SETTINGS, NOW) == 0

    assert metrics.RETENTION_MONTHS_WAITING._value.get() == waits + 1
    assert rows_of(conn, waiting)["recipients"] == 2 and rows_of(conn, ended)["jobs"] == 1
    age(conn, [waiting], status="cancelled", days=366)  # it ended past the horizon: now the month goes
    assert retention.drop_expired_partitions(conn, SETTINGS, NOW) == len(retention.JOB_MONTH_TABLES)
    assert rows_of(conn, waiting)["jobs"] == rows_of(conn, ended)["jobs"] == 0


def test_a_month_waits_while_a_job_made_then_ended_within_the_horizon(conn, api_key) -> None:
    # Review finding 2: queued long ago with a far send_at, sent minutes ago; its month must not go with it.
    app = app_id(conn)
    old_at = NOW - datetime.timedelta(days=420)
    long_ended, just_sent = make_jobs_made_at(conn, app, old_at, count=2)
    age(conn, [long_ended], status="sent", days=400)
    conn.execute("UPDATE jobs SET status = 'sent', updated_at = now() - interval '7 minutes' WHERE id = %s",
                 (just_sent,))
    waits = metrics.RETENTION_MONTHS_WAITING._value.get()

    assert retention.drop_expired_partitions(conn, SETTINGS, NOW) == 0

    assert metrics.RETENTION_MONTHS_WAITING._value.get() == waits + 1
    assert rows_of(conn, just_sent)["recipients"] == 2 and rows_of(conn, long_ended)["jobs"] == 1
    age(conn, [just_sent], status="sent", days=366)  # its end is past the horizon too: the month goes
    assert retention.drop_expired_partitions(conn, SETTINGS, NOW) == len(retention.JOB_MONTH_TABLES)
    assert rows_of(conn, just_sent)["jobs"] == rows_of(conn, long_ended)["jobs"] == 0


def test_a_job_that_ends_between_the_check_and_the_drop_undoes_it(conn, database_url, api_key, monkeypatch) -> None:
    app = app_id(conn)
    job = make_jobs_made_at(conn, app, NOW - datetime.timedelta(days=420))[0]
    age(conn, [job], status="sent", days=400)
    first_check = retention.store.month_has_recently_ended_jobs
    calls = []

    def then_it_is_sent_again(conn_: psycopg.Connection, **kwargs: Any) -> bool:
        recent = first_check(conn_, **kwargs)
        if not calls:  # between the first check and the drop's lock, a retry sends it again
            with psycopg.connect(database_url, autocommit=True) as other:
                other.execute("UPDATE jobs SET updated_at = now() WHERE id = %s", (job,))
        calls.append(recent)
        return recent

    monkeypatch.setattr(retention.store, "month_has_recently_ended_jobs", then_it_is_sent_again)
    assert retention.drop_expired_partitions(conn, SETTINGS, NOW) == 0
    assert calls == [False, True]
    assert rows_of(conn, job)["recipients"] == 2


def test_a_month_not_wholly_past_the_horizon_stays(conn, api_key) -> None:
    app = app_id(conn)
    # The month that holds the horizon: part of it is younger than MAILER_RETENTION_DAYS.
    job = make_jobs_made_at(conn, app, NOW - datetime.timedelta(days=365))[0]
    age(conn, [job], status="sent", days=365)
    assert retention.drop_expired_partitions(conn, SETTINGS, NOW) == 0
    assert rows_of(conn, job)["jobs"] == 1


def test_the_hourly_housekeeping_task_drops_expired_months(settings: Settings, conn, api_key) -> None:
    from mailer import tasks

    app = app_id(conn)
    job = make_jobs_made_at(conn, app, NOW - datetime.timedelta(days=800))[0]
    age(conn, [job], status="failed", days=700)
    pool = db.create_pool(settings, name="test")  # its connections open transactions, as the worker's do
    try:
        pool.wait()
        runtime = types.SimpleNamespace(pool=pool, settings=settings)
        tasks.maintain_partitions(types.SimpleNamespace(additional_context={"runtime": runtime}), timestamp=0)
    finally:
        pool.close()
    assert rows_of(conn, job)["jobs"] == 0
    assert all(month_of(NOW - datetime.timedelta(days=800)) not in months for months in months_kept(conn).values())


def test_unmatched_events_past_their_horizon_are_deleted(conn, api_key) -> None:
    """A few rows of a month kept for a year: deleted by rows (webhook messages and idempotency keys go by
    whole months: tests/integration/test_time_partitions.py)."""
    for days, name in ((31, "old"), (29, "new")):
        conn.execute(
            """INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, payload, received_at)
               VALUES (%s, 'open', 'opened', now(), 42, '{}', now() - make_interval(days => %s))""",
            (name, days),
        )

    removed = retention.run(conn, POLICY)

    assert removed.unmatched_events_deleted == 1
    assert [r[0] for r in conn.execute("SELECT fingerprint FROM mailjet_events")] == ["new"]


# --- batches, budget, idempotence ----------------------------------------------------------------------


def test_small_batches_still_purge_everything_and_delete_no_job(conn, api_key) -> None:
    app = app_id(conn)
    old = make_jobs(conn, app, 5)
    age(conn, old, status="sent", days=400)
    removed = retention.run(conn, retention.Policy(body_days=30, days=365, batch=2))
    assert removed.bodies_purged == 5
    assert removed.complete
    assert count(conn, "SELECT count(*) FROM jobs WHERE body_purged_at IS NOT NULL") == 5  # jobs go by month only


def test_each_batch_commits_and_the_budget_stops_a_run(conn, api_key) -> None:
    app = app_id(conn)
    old = make_jobs(conn, app, 5)
    age(conn, old, status="sent", days=40)
    ticks = itertools.count()
    policy = retention.Policy(body_days=30, days=365, batch=2)

    removed = retention.run(conn, policy, budget_s=2, clock=lambda: float(next(ticks)))

    assert not removed.complete
    assert removed.bodies_purged == 2  # one check before the start, then one before each batch
    assert count(conn, "SELECT count(*) FROM jobs WHERE body_purged_at IS NOT NULL") == 2
    again = retention.run(conn, policy)
    assert again.complete
    assert again.bodies_purged == 3


def test_running_twice_changes_nothing_more(conn, api_key) -> None:
    app = app_id(conn)
    age(conn, make_jobs(conn, app, 3), status="sent", days=400)
    age(conn, make_jobs(conn, app, 2), status="failed", days=40)
    first = retention.run(conn, POLICY)
    assert first.bodies_purged == 5
    snapshot = conn.execute("SELECT id, message, body_purged_at, updated_at FROM jobs ORDER BY id").fetchall()
    second = retention.run(conn, POLICY)
    assert second.total() == 0
    assert second.complete
    assert conn.execute("SELECT id, message, body_purged_at, updated_at FROM jobs ORDER BY id").fetchall() == snapshot


def test_a_job_locked_elsewhere_is_left_for_a_later_run(conn, database_url, api_key) -> None:
    app = app_id(conn)
    locked, free = make_jobs(conn, app, 2)
    age(conn, [locked, free], status="sent", days=40)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (locked,))
        assert retention.run(conn, POLICY).bodies_purged == 1  # did not wait for the lock
    assert retention.run(conn, POLICY).bodies_purged == 1


# --- the audit trail's one exception -------------------------------------------------------------------


def test_job_events_delete_is_refused_outside_retention_and_allowed_inside(conn, api_key) -> None:
    job = make_jobs(conn, app_id(conn))[0]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("DELETE FROM job_events WHERE job_id = %s", (job,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"), conn.transaction():
        conn.execute("SELECT set_config('mailer.retention', 'off', true)")
        conn.execute("DELETE FROM job_events WHERE job_id = %s", (job,))
    with conn.transaction():  # the trigger's exception, which nothing of ours uses any more (months are dropped)
        conn.execute("SELECT set_config('mailer.retention', 'on', true)")
        assert conn.execute("DELETE FROM job_events WHERE job_id = %s", (job,)).rowcount == 1
    assert count(conn, "SELECT count(*) FROM job_events WHERE job_id = %s", job) == 0
    # the setting ended with its transaction
    conn.execute("INSERT INTO job_events (job_id, type) VALUES (%s, 'queued')", (job,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("DELETE FROM job_events WHERE job_id = %s", (job,))


def test_job_events_update_is_refused_even_inside_retention(conn, api_key) -> None:
    job = make_jobs(conn, app_id(conn))[0]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"), conn.transaction():
        conn.execute("SELECT set_config('mailer.retention', 'on', true)")
        conn.execute("UPDATE job_events SET type = 'sent' WHERE job_id = %s", (job,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("UPDATE job_events SET type = 'sent' WHERE job_id = %s", (job,))
    assert [r[0] for r in conn.execute("SELECT type FROM job_events WHERE job_id = %s", (job,))] == ["queued"]


# --- Procrastinate's finished jobs ---------------------------------------------------------------------


def queue_job(conn: psycopg.Connection, status: str, days: int) -> int:
    """A Procrastinate job that went todo -> doing -> `status`, its last event `days` ago."""
    job_id = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name) VALUES ('send', 'mailer.send_due_jobs') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    for step in ("doing", status) if status != "todo" else ():
        conn.execute("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", (step, job_id))
    conn.execute("UPDATE procrastinate_events SET at = now() - make_interval(days => %s) WHERE job_id = %s",
                 (days, job_id))
    return int(job_id)


def test_finished_procrastinate_jobs_older_than_a_week_are_deleted(conn) -> None:
    gone = [queue_job(conn, "succeeded", 8), queue_job(conn, "failed", 8), queue_job(conn, "aborted", 30)]
    kept = [queue_job(conn, "failed", 6), queue_job(conn, "todo", 30), queue_job(conn, "doing", 30)]
    removed = retention.run(conn, POLICY)
    assert removed.queue_jobs_deleted == 3
    remaining = [r[0] for r in conn.execute("SELECT id FROM procrastinate_jobs ORDER BY id")]
    assert remaining == kept
    assert count(conn, "SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(%s)", gone) == 0


def test_replays_finished_past_the_horizon_are_deleted_running_and_recent_ones_stay(client, auth, conn) -> None:
    endpoint = register(client, auth, "https://93.184.215.14/hooks/replays")["id"]

    def replay(finished_days_ago: int | None) -> int:
        row = conn.execute(
            "INSERT INTO webhook_replays (endpoint_id, app_id, since, until, statuses, matched, outcome, finished_at) "
            "VALUES (%(e)s, %(a)s, now() - interval '1 day', now(), ARRAY['sent'], 0, "
            "CASE WHEN %(d)s::integer IS NOT NULL THEN 'done' END, now() - make_interval(days => %(d)s::integer)) "
            "RETURNING id", {"e": endpoint, "a": app_id(conn), "d": finished_days_ago}).fetchone()
        assert row is not None
        return int(row[0])

    gone = [replay(400), replay(366)]
    kept = [replay(364), replay(None)]  # finished within the horizon; still running
    removed = retention.run(conn, retention.Policy(body_days=30, days=365, batch=1))
    assert removed.webhook_replays_deleted == len(gone)
    assert [r[0] for r in conn.execute("SELECT id FROM webhook_replays ORDER BY id")] == kept


# --- the periodic task ---------------------------------------------------------------------------------


def test_the_periodic_task_runs_retention_with_the_settings(settings: Settings, conn, api_key) -> None:
    import dataclasses

    from mailer import jobqueue, tasks

    app = app_id(conn)
    old = make_jobs(conn, app, 3)
    age(conn, old, status="sent", days=12)
    pool = db.create_pool(dataclasses.replace(settings, retention_body_days=10, retention_batch=2), name="test")
    try:
        pool.wait()
        runtime = types.SimpleNamespace(pool=pool, settings=dataclasses.replace(settings, retention_body_days=10,
                                                                                 retention_batch=2))
        tasks.apply_retention(types.SimpleNamespace(additional_context={"runtime": runtime}), timestamp=0)
    finally:
        pool.close()
    assert count(conn, "SELECT count(*) FROM jobs WHERE body_purged_at IS NOT NULL") == 3
    periodic = {task.periodic_id: task for task in jobqueue.app.periodic_registry.periodic_tasks.values()}
    assert periodic["retention"].task.name == "mailer.apply_retention"
    assert periodic["retention"].task.queue == "housekeeping"
