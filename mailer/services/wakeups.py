"""Wake the senders: one Procrastinate job per batch of due email, deferred in the caller's transaction
(POST /queue's email due now may count on one already waiting instead: sql/migrations/0015)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

import psycopg
import psycopg_pool

from mailer import db, jobqueue, store

log = logging.getLogger(__name__)


def wake_senders(conn: psycopg.Connection, due: Iterable[tuple[str, dt.datetime | None]], batch_size: int) -> None:
    """Defer enough send jobs for `due` (priority, run_at or None for now) in the open transaction.

    Because the wake-up commits with the rows it wakes for, no committed email is ever left
    without a job that will look for it; a job that finds nothing left costs two claims and a barrier.
    (POST /queue's jobs are woken by the statement that inserts them: store.insert_jobs.)
    """
    due = list(due)
    if due:
        store.wake_senders(conn, lanes=[jobqueue.LANE_PRIORITY[priority] for priority, _ in due],
                           wake_ats=[run_at for _, run_at in due], target=send_target(batch_size))


def wake_lane(conn: psycopg.Connection, lane: int, batch_size: int, delay_s: float = 0.0) -> None:
    """Defer one wake-up of `lane` (a Procrastinate priority), `delay_s` from now, in the open transaction."""
    wake_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay_s) if delay_s else None
    store.wake_senders(conn, lanes=[lane], wake_ats=[wake_at], target=send_target(batch_size))


def send_target(batch_size: int) -> dict[str, object]:
    """What mailer_wake_senders (sql/migrations/0009, 0015) defers: the send task, its queue, lanes and batch size."""
    return {"queue": jobqueue.SEND_QUEUE, "task": jobqueue.SEND_TASK, "batch_size": batch_size,
            "transactional_lane": jobqueue.LANE_PRIORITY["transactional"], "bulk_lane": jobqueue.LANE_PRIORITY["bulk"]}


def await_wakers(pool: psycopg_pool.ConnectionPool) -> None:
    """A sender's barrier before its last claim: wait for the requests that counted on its wake-up to end."""
    with db.autocommit(pool) as conn:
        try:
            store.await_wakers(conn)
        except psycopg.errors.LockNotAvailable:
            # A request slow to end holds it: give way rather than hold up every request (sql/migrations/0015).
            log.warning("gave up waiting for the requests that counted on this wake-up; the recovery sweep covers them")
