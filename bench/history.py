"""Historic jobs for the history measurements: millions of sent emails with everything they leave behind."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import psycopg

MONTHS = 10  # the calendar months before the current one that the history fills, the same number of jobs each
# A UUIDv7 of the time `t`, as mailer/domain/ids.py makes them: 48 bits of Unix milliseconds, version 7, then
# gen_random_uuid()'s random bits with their RFC variant (its version nibble, the 13th digit, replaced).
_UUID7 = ("(lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7' "
          "|| substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid")
# One month of sent jobs in one statement, each with its recipient (delivered, with a MessageID), its address
# for /logs?recipient=, its audit trail (queued, sending, sent), its Mailjet event, and a finished wake-up per 50
# jobs. Jobs that ended more than 30 days ago have their bodies purged already, as retention would have done.
# session_replication_role = replica: no foreign key checked and no trigger fired, as in a restore.
_MONTH = f"""
WITH made AS (
    INSERT INTO jobs (id, app_id, status, priority, message, metadata, run_at, attempts, created_at, updated_at,
                      body_purged_at)
    SELECT {_UUID7}, %(app_id)s, 'sent', 'transactional',
           jsonb_build_object('from', jsonb_build_object('email', 'billing@example.com', 'name', 'Billing'),
                              'to', jsonb_build_array(jsonb_build_object('email', 'old' || i || '@example.org')),
                              'cc', '[]'::jsonb, 'bcc', '[]'::jsonb, 'subject', 'Your invoice #' || i)
           || CASE WHEN purged THEN '{{}}'::jsonb
                   ELSE jsonb_build_object('text', 'Hello, your invoice is attached.', 'html', '<p>Hello</p>') END,
           jsonb_build_object('order_id', i), t, 1, t, t + interval '1 second',
           CASE WHEN purged THEN t + interval '30 days 1 second' END
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i,
         LATERAL (SELECT %(start)s::timestamptz + (i - %(first)s)::float8 * %(step)s::interval AS t) AS at,
         LATERAL (SELECT t + interval '1 second' < %(purged_before)s::timestamptz AS purged) AS p
    RETURNING id, app_id, created_at, updated_at, message->'to'->0->>'email' AS email,
              (metadata->>'order_id')::bigint AS n
), addresses AS (
    INSERT INTO recipient_addresses (app_id, email, created_at, job_id)
    SELECT app_id, lower(email), created_at, id FROM made
), audit AS (
    INSERT INTO job_events (job_id, type, at, detail)
    SELECT id, e.type, created_at + e.after, e.detail
    FROM made, (VALUES ('queued', interval '0', NULL::jsonb), ('sending', interval '0.1 s', '{{"attempt": 1}}'),
                       ('sent', interval '1 s', NULL)) AS e(type, after, detail)
), wakeups AS (
    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, args, status, scheduled_at, attempts)
    SELECT 'send', 'mailer.send_due_jobs', 10, '{{}}'::jsonb, 'succeeded', %(start)s::timestamptz, 1
    FROM generate_series(1, %(wakeups)s)
), delivered AS (
    INSERT INTO recipients (job_id, kind, position, email, status, message_id, message_uuid, updated_at)
    SELECT id, 'to', 0, email, 'delivered', %(first_message_id)s + n, 'uuid-' || n, updated_at FROM made
    RETURNING id, job_id, email, message_id, updated_at
)
INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, custom_id, email, payload,
                            received_at, recipient_id, applied_at)
SELECT md5(id::text) || md5(message_id::text), 'sent', 'delivered', updated_at, message_id, job_id::text, email,
       jsonb_build_object('event', 'sent', 'MessageID', message_id, 'email', email), updated_at, id, updated_at
FROM delivered
"""  # noqa: S608  # constants of this module
# What insert_jobs writes with each job and rows loaded directly skip: the addresses for /logs?recipient=.
RECIPIENT_ADDRESSES = """
INSERT INTO recipient_addresses (app_id, email, created_at, job_id)
SELECT DISTINCT j.app_id, lower(r.email), j.created_at, j.id
FROM recipients AS r JOIN jobs AS j ON j.id = r.job_id
WHERE j.app_id = %(app_id)s
ON CONFLICT DO NOTHING
"""
TABLES = ("jobs", "recipients", "recipient_addresses", "job_events", "mailjet_events", "procrastinate_jobs")
# The non-unique indexes of those tables and of their partitions, but not those a parent's index made on them
# (they go and come back with it); a partitioned index's definition says ON ONLY, which would build it empty.
_INDEXES = """
SELECT c.relname, replace(pg_get_indexdef(c.oid), ' ON ONLY ', ' ON ')
FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid
WHERE NOT x.indisunique AND NOT EXISTS (SELECT FROM pg_inherits AS i WHERE i.inhrelid = c.oid)
  AND coalesce(pg_partition_root(x.indrelid), x.indrelid) = ANY (%(tables)s::regclass[])
"""
# Statement triggers that keep derived data (job_counts) on insert: made to fire during the load anyway.
_INSERT_TRIGGERS = """
SELECT tgname FROM pg_trigger
WHERE tgrelid = 'jobs'::regclass AND NOT tgisinternal AND tgenabled = 'O' AND tgtype & 4 <> 0
"""



def uuid7_at(at: str) -> str:
    """SQL for a UUIDv7 made at the time `at` (an SQL expression), as mailer/domain/ids.py makes job ids: a job
    loaded with it lands in the month partition of its time (0028), as in a real history."""
    return _UUID7.replace("extract(epoch FROM t)", f"extract(epoch FROM {at})")


# The month partitions of every registered history table from `first_month` to now: rows loaded for a month
# that has none would fill the DEFAULT partition (and stop that month's partition from being made later).
ENSURE_MONTHS = """
SELECT mailer_ensure_month_partitions(parent, kind, %(first_month)s::date, now()::date)
FROM month_partitioned_tables
"""

def months(today: dt.date, count: int = MONTHS) -> list[dt.date]:
    """The first days of the `count` calendar months before `today`'s, oldest first."""
    first = today.replace(day=1)
    return [add_months(first, -n) for n in range(count, 0, -1)]


def add_months(day: dt.date, n: int) -> dt.date:
    """The first day of the month `n` months after `day`'s (before, for a negative `n`)."""
    index = day.year * 12 + day.month - 1 + n
    return dt.date(index // 12, index % 12 + 1, 1)


def load(url: str, app_id: int, jobs: int, say: Callable[[str], None] = lambda _: None) -> float:
    """Insert `jobs` historic sent jobs, an equal share in each of the MONTHS months before this one, with what
    they leave behind; the seconds it took (indexes and VACUUM ANALYZE too).

    Month partitions of every registered parent are made first for those months, so each month's rows land in
    its own. Fast as a restore is: one statement a month, foreign keys unchecked (session_replication_role =
    replica, the job_counts trigger made to fire anyway), secondary indexes built after.
    """
    started = time.perf_counter()
    spans = months(dt.datetime.now(dt.UTC).date())
    per_month = jobs // len(spans)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SELECT mailer_ensure_month_partitions(parent, kind, %s, %s) FROM month_partitioned_tables",
                     (spans[0], spans[-1]))
        indexes = conn.execute(_INDEXES, {"tables": list(TABLES)}).fetchall()
        triggers = [row[0] for row in conn.execute(_INSERT_TRIGGERS).fetchall()]
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')  # type: ignore[arg-type]  # names from the catalog
        for name in triggers:
            conn.execute(f'ALTER TABLE jobs ENABLE ALWAYS TRIGGER "{name}"')  # type: ignore[arg-type]  # catalog
        purged_before = conn.execute("SELECT now() - interval '30 days'").fetchone()[0]  # type: ignore[index]
        try:
            for n, month in enumerate(spans):
                start = dt.datetime.combine(month, dt.time(), dt.UTC)
                length = dt.datetime.combine(add_months(month, 1), dt.time(), dt.UTC) - start
                # The last job a minute before the month's end: its events (a second later) stay in the month.
                step = (length - dt.timedelta(minutes=1)) / per_month
                began = time.perf_counter()
                conn.execute(_MONTH, {  # type: ignore[arg-type]  # a constant above
                    "app_id": app_id, "first": n * per_month + 1, "last": (n + 1) * per_month, "start": start,
                    "step": step, "purged_before": purged_before, "first_message_id": 2**57,
                    "wakeups": max(1, per_month // 50),
                })
                took = time.perf_counter() - began
                say(f"history: {month:%Y-%m}, {per_month:,} jobs with their rows in {took:.0f} s")
        finally:
            for name in triggers:
                conn.execute(f'ALTER TABLE jobs ENABLE TRIGGER "{name}"')  # type: ignore[arg-type]  # catalog
        began = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        say(f"history: {len(indexes)} secondary indexes built in {time.perf_counter() - began:.0f} s")
        began = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        say(f"history: VACUUM ANALYZE in {time.perf_counter() - began:.0f} s")
    return time.perf_counter() - started
