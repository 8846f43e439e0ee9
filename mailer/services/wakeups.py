"""Wake the senders: one Procrastinate job per batch of due email, deferred in the caller's transaction;
email due now counts on a wake-up already waiting in its lane (sql/migrations/0015)."""

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
    without a job that will look for it; a job that finds nothing left is a cheap no-op. Email due now
    may count on one waiting instead, which then claims after `await_wakers`.
    (POST /queue's jobs are woken by the statement that inserts them: store.insert_jobs.)
    """
    due = list(due)
    if due:
        store.wake_senders(conn, lanes=[jobqueue.LANE_PRIORITY[priority] for priority, _ in due],
                           wake_ats=[run_at for _, run_at in due], target=send_target(batch_size))


def wake_lane(conn: psycopg.Connection, lane: int, batch_size: int) -> None:
    """Wake a sender for the email due now in `lane` (a Procrastinate priority) unless one is waiting."""
    store.wake_senders(conn, lanes=[lane], wake_ats=[None], target=send_target(batch_size))


def send_target(batch_size: int) -> dict[str, object]:
    """What mailer_wake_senders (sql/migrations/0009, 0015) defers: the send task, its queue, lanes and batch size."""
    return {"queue": jobqueue.SEND_QUEUE, "task": jobqueue.SEND_TASK, "batch_size": batch_size,
            "transactional_lane": jobqueue.LANE_PRIORITY["transactional"], "bulk_lane": jobqueue.LANE_PRIORITY["bulk"]}


def await_wakers(pool: psycopg_pool.ConnectionPool) -> None:
    """A sender's barrier before its last claim: wait for every transaction that may have counted on its
    wake-up (having seen it waiting) to end, so the claim after this sees their email."""
    with db.autocommit(pool) as conn:
        try:
            store.await_wakers(conn)
        except psycopg.errors.LockNotAvailable:
            # A long transaction holds it, or a cycle through a row lock: give way (sql/migrations/0015).
            log.warning("gave up waiting for the transactions that woke this sender; the recovery sweep covers them")
