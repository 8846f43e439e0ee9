"""Retention: purging bodies and deleting what is past the horizon, a bounded batch per call."""

from __future__ import annotations

import datetime

import psycopg

from mailer.store import _run


def _count(conn: psycopg.Connection, query_name: str, column: str, **params: object) -> int:
    row = _run.one_row(conn, query_name, **params)
    return int(row[column]) if row else 0


def purge_job_bodies(conn: psycopg.Connection, *, body_days: int, limit: int) -> int:
    """Drop the body of up to `limit` jobs that ended more than `body_days` ago; how many."""
    return _count(conn, "purge_job_bodies", "purged", body_days=body_days, limit=limit)


def month_has_live_jobs(conn: psycopg.Connection, *, month: datetime.date) -> bool:
    """Whether a job made in `month` is still scheduled, queued or sending."""
    row = _run.one_row(conn, "month_has_live_jobs", month=month)
    return bool(row and row["waiting"])


def month_has_recently_ended_jobs(conn: psycopg.Connection, *, month: datetime.date,
                                  ended_after: datetime.datetime) -> bool:
    """Whether a job made in `month` ended after `ended_after`."""
    row = _run.one_row(conn, "month_has_recently_ended_jobs", month=month, ended_after=ended_after)
    return bool(row and row["recent"])


def lock_jobs_done(conn: psycopg.Connection, *, lock_timeout_ms: int) -> None:
    """Lock jobs_done for the rest of the transaction (at most lock_timeout_ms of waiting: LockNotAvailable)."""
    _run.all_rows(conn, "set_partition_lock_timeout", lock_timeout=f"{lock_timeout_ms}ms")
    _run.all_rows(conn, "lock_jobs_done")


def delete_schedule_occurrences_of_month(conn: psycopg.Connection, *, month: datetime.date) -> int:
    """Delete the schedule occurrences that produced the jobs made in `month`; how many."""
    return _count(conn, "delete_schedule_occurrences_of_month", "deleted", month=month)


def delete_unmatched_mailjet_events(conn: psycopg.Connection, *, days: int, limit: int) -> int:
    """Delete up to `limit` never-matched Mailjet events older than `days`; how many."""
    return _count(conn, "delete_unmatched_mailjet_events", "deleted", days=days, limit=limit)


def drop_webhook_month(conn: psycopg.Connection, *, month: datetime.date, lock_timeout_ms: int) -> str:
    """Drop `month` of the webhook history unless work is pending in it: 'dropped', 'busy' or 'absent'.

    Raises psycopg.errors.LockNotAvailable when a parent stays locked longer than lock_timeout_ms.
    """
    with conn.transaction():
        _run.all_rows(conn, "set_partition_lock_timeout", lock_timeout=f"{lock_timeout_ms}ms")
        row = _run.one_row(conn, "drop_webhook_month", month=month)
    return str(row["outcome"]) if row else "absent"


def delete_finished_queue_jobs(conn: psycopg.Connection, *, hours: int, limit: int) -> int:
    """Delete up to `limit` Procrastinate jobs finished more than `hours` ago; how many."""
    return _count(conn, "delete_finished_queue_jobs", "deleted", hours=hours, limit=limit)


def delete_finished_webhook_replays(conn: psycopg.Connection, *, days: int, limit: int) -> int:
    """Delete up to `limit` replays by window finished more than `days` ago; how many."""
    return _count(conn, "delete_finished_webhook_replays", "deleted", days=days, limit=limit)
