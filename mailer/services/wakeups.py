"""Wake the senders: one Procrastinate job per batch of due email, deferred in the caller's transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import psycopg

from mailer import jobqueue, store


def wake_senders(conn: psycopg.Connection, due: Iterable[tuple[str, dt.datetime | None]], batch_size: int) -> None:
    """Defer enough send jobs for `due` (priority, run_at or None for now) in the open transaction.

    Because the wake-up commits with the rows it wakes for, no committed email is ever left
    without a job that will look for it; a job that finds nothing left is a cheap no-op.
    (POST /queue's jobs are woken by the statement that inserts them: store.insert_jobs.)
    """
    due = list(due)
    if due:
        store.wake_senders(conn, lanes=[jobqueue.LANE_PRIORITY[priority] for priority, _ in due],
                           wake_ats=[run_at for _, run_at in due], target=send_target(batch_size))


def send_target(batch_size: int) -> dict[str, object]:
    """What mailer_wake_senders (sql/migrations/0009) defers: the send task, its queue, lanes and batch size."""
    return {"queue": jobqueue.SEND_QUEUE, "task": jobqueue.SEND_TASK, "batch_size": batch_size,
            "transactional_lane": jobqueue.LANE_PRIORITY["transactional"], "bulk_lane": jobqueue.LANE_PRIORITY["bulk"]}
