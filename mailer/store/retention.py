"""Retention: purging bodies and deleting what is past the horizon, a bounded batch per call."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence

import psycopg

from mailer.store import _run


def _count(conn: psycopg.Connection, query_name: str, column: str, **params: object) -> int:
    row = _run.one_row(conn, query_name, **params)
    return int(row[column]) if row else 0


def allow_retention_deletes(conn: psycopg.Connection) -> None:
    """Let the open transaction delete audit events (job_events refuses it otherwise); needs a transaction."""
    _run.all_rows(conn, "allow_retention_deletes")


def purge_job_bodies(conn: psycopg.Connection, *, body_days: int, limit: int) -> int:
    """Drop the body of up to `limit` jobs that ended more than `body_days` ago; how many."""
    return _count(conn, "purge_job_bodies", "purged", body_days=body_days, limit=limit)


def lock_old_jobs(conn: psycopg.Connection, *, days: int, limit: int) -> list[uuid.UUID]:
    """Lock up to `limit` purged jobs that ended more than `days` ago (skipping locked ones); their ids."""
    return [row["id"] for row in _run.all_rows(conn, "lock_old_jobs", days=days, limit=limit)]


def delete_webhook_messages_of_jobs(conn: psycopg.Connection, *, job_ids: Sequence[uuid.UUID]) -> int:
    """Delete the webhook messages (with deliveries and attempts) about these jobs; how many messages."""
    return _count(conn, "delete_webhook_messages_of_jobs", "deleted", job_ids=list(job_ids))


def delete_job_events_of_jobs(conn: psycopg.Connection, *, job_ids: Sequence[uuid.UUID]) -> int:
    """Delete these jobs' audit trails (after allow_retention_deletes); how many events."""
    return _count(conn, "delete_job_events_of_jobs", "deleted", job_ids=list(job_ids))


def delete_schedule_occurrences_of_jobs(conn: psycopg.Connection, *, job_ids: Sequence[uuid.UUID]) -> int:
    """Delete the schedule occurrences that produced these jobs; how many."""
    return _count(conn, "delete_schedule_occurrences_of_jobs", "deleted", job_ids=list(job_ids))


def delete_jobs(conn: psycopg.Connection, *, job_ids: Sequence[uuid.UUID]) -> int:
    """Delete jobs with their recipients and addresses (the recipients' Mailjet events go by cascade); how many."""
    return _count(conn, "delete_jobs", "deleted", job_ids=list(job_ids))


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
