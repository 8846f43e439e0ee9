"""Historic jobs for the scale measurement: a million sent emails with everything they leave behind."""

from __future__ import annotations

import datetime
import time

import psycopg


def uuid7_at(at: str) -> str:
    """SQL for a UUIDv7 made at the time `at` (an SQL expression), laid out as domain/ids.py makes job ids: so a
    loaded job lands in the month partition of its time (0028), as in a real history."""
    return (f"(lpad(to_hex((extract(epoch FROM {at}) * 1000)::bigint), 12, '0') || '7'"
            " || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid")


# The month partitions of every registered history table from `first_month` to now: rows loaded for a month
# that has none would fill the DEFAULT partition (and stop that month's partition from being made later).
ENSURE_MONTHS = """
SELECT mailer_ensure_month_partitions(parent, kind, %(first_month)s::date, now()::date)
FROM month_partitioned_tables
"""

# Sent jobs spread over the last 30 days, each with its recipient (delivered, with a MessageID), its
# audit trail (queued, sending, sent), its Mailjet event, and one finished wake-up per 50 jobs.
_JOBS = """
INSERT INTO jobs (id, app_id, status, priority, message, metadata, run_at, attempts, created_at, updated_at)
SELECT {uuid7_t}, %(app_id)s, 'sent', 'transactional',
       jsonb_build_object('from', jsonb_build_object('email', 'billing@example.com', 'name', 'Billing'),
                          'to', jsonb_build_array(jsonb_build_object('email', 'old' || i || '@example.org')),
                          'cc', '[]'::jsonb, 'bcc', '[]'::jsonb, 'subject', 'Your invoice #' || i,
                          'text', 'Hello, your invoice is attached.', 'html', '<p>Hello</p>'),
       jsonb_build_object('order_id', i), t, 1, t, t + interval '1 second'
FROM generate_series(1, %(jobs)s) AS i,
     LATERAL (SELECT now() - interval '30 days' + i * (interval '30 days' / %(jobs)s) AS t) AS at
""".replace("{uuid7_t}", uuid7_at("t"))
_RECIPIENTS = """
INSERT INTO recipients (job_id, kind, position, email, status, message_id, message_uuid, updated_at)
SELECT id, 'to', 0, message->'to'->0->>'email', 'delivered', %(first_message_id)s + n, 'uuid-' || n, updated_at
FROM (SELECT id, message, updated_at, row_number() OVER () AS n FROM jobs WHERE created_at < %(before)s) AS j
"""
# What insert_jobs writes with each job and rows loaded directly skip: the addresses for /logs?recipient=.
RECIPIENT_ADDRESSES = """
INSERT INTO recipient_addresses (app_id, email, created_at, job_id)
SELECT DISTINCT j.app_id, lower(r.email), j.created_at, j.id
FROM recipients AS r JOIN jobs AS j ON j.id = r.job_id
WHERE j.app_id = %(app_id)s
ON CONFLICT ON CONSTRAINT recipient_addresses_pkey DO NOTHING
"""
_JOB_EVENTS = """
INSERT INTO job_events (job_id, type, at, detail)
SELECT id, e.type, created_at + e.after, e.detail
FROM jobs, (VALUES ('queued', interval '0', NULL::jsonb), ('sending', interval '0.1 s', '{"attempt": 1}'),
                   ('sent', interval '1 s', NULL)) AS e(type, after, detail)
WHERE created_at < %(before)s
"""
_MAILJET_EVENTS = """
INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, custom_id, email, payload,
                            received_at, recipient_id, applied_at)
SELECT md5(r.id::text) || md5(r.message_id::text), 'sent', 'delivered', r.updated_at, r.message_id, r.job_id::text,
       r.email, jsonb_build_object('event', 'sent', 'MessageID', r.message_id, 'email', r.email),
       r.updated_at, r.id, r.updated_at
FROM recipients AS r
"""
_WAKEUPS = """
INSERT INTO procrastinate_jobs (queue_name, task_name, priority, args, status, scheduled_at, attempts)
SELECT 'send', 'mailer.send_due_jobs', 10, '{}'::jsonb, 'succeeded', now() - interval '30 days', 1
FROM generate_series(1, %(wakeups)s)
"""
_TABLES = ("jobs", "recipients", "recipient_addresses", "job_events", "mailjet_events", "procrastinate_jobs")


def load(url: str, app_id: int, jobs: int) -> float:
    """Insert `jobs` historic sent jobs and what they leave behind; the seconds it took (VACUUM ANALYZE too).

    Fast as a restore is: foreign keys unchecked (session_replication_role = replica, with the trigger
    that fills job_counts made to fire anyway), secondary indexes built after.
    """
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            conn.execute("ALTER TABLE jobs ENABLE ALWAYS TRIGGER job_counts_on_insert")
            indexes = conn.execute(
                """SELECT c.relname, pg_get_indexdef(c.oid)
                   FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                   WHERE t.relname = ANY(%s) AND NOT x.indisunique""", (list(_TABLES),)
            ).fetchall()
            for name, _ in indexes:
                conn.execute(f"DROP INDEX {name}")  # type: ignore[arg-type]  # names from the catalog
            params = {"app_id": app_id, "jobs": jobs, "before": before, "first_message_id": 2**57,
                      "wakeups": max(1, jobs // 50), "first_month": before - datetime.timedelta(days=31)}
            conn.execute(ENSURE_MONTHS, params)
            for sql in (_JOBS, _RECIPIENTS, RECIPIENT_ADDRESSES, _JOB_EVENTS, _MAILJET_EVENTS, _WAKEUPS):
                conn.execute(sql, params)  # type: ignore[arg-type]  # constants above
            for _, definition in indexes:
                # a partitioned parent's index reads "ON ONLY parent": rebuilt so, it would cover no partition
                conn.execute(definition.replace(" ON ONLY ", " ON ", 1))
            conn.execute("ALTER TABLE jobs ENABLE TRIGGER job_counts_on_insert")
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started
