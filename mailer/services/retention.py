"""Retention: purge message bodies, then delete jobs (and what hangs off them) past the horizon.

Every step works a bounded batch at a time, each batch in its own short transaction that locks only its
rows (FOR UPDATE SKIP LOCKED: a row someone else holds waits for a later batch), and the run stops when
nothing is left or its time budget is spent. Two runs at once (the periodic task and `mailer retention
run`) share the work. Counters in job_counts are history and are never touched.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable

import psycopg

from mailer.config import Settings
from mailer.mailjet import events as mailjet_events
from mailer.store import partitions
from mailer.store import retention as store

log = logging.getLogger(__name__)

# Events that never matched a message of ours: a message they could still match has its send result
# stored within minutes, so these are noise (with addresses in them) after this long.
UNMATCHED_EVENT_DAYS = 30
# Procrastinate's finished jobs (the worker deletes successful ones at once; failed ones stay for a look).
QUEUE_JOB_HOURS = 7 * 24
# The parents one month of webhook history spans: messages, fan-outs, deliveries, attempts.
WEBHOOK_TABLES = 4


def drop_expired_partitions(conn: psycopg.Connection, settings: Settings, now: datetime.datetime) -> int:
    """Drop the month partitions of history past their horizon, where it is safe; how many were dropped."""
    return _drop_expired_time_history(conn, settings, now)


def _drop_expired_time_history(conn: psycopg.Connection, settings: Settings, now: datetime.datetime) -> int:
    """The months of the time-keyed history (migration 0029) wholly older than MAILER_RETENTION_DAYS; how many
    partitions went. A parent too busy to lock waits for the next run."""
    days = datetime.timedelta(days=settings.retention_days)
    timeout_ms = settings.partition_lock_timeout_ms
    dropped = 0
    try:
        # A new event may still land in a month its plausible time reaches (mailer/mailjet/events.py).
        for month in _expired_months(conn, "mailjet_events", now - max(days, mailjet_events.PLAUSIBLE_PAST)):
            dropped += partitions.drop_month_partition(conn, "mailjet_events", month, timeout_ms)
        # Keys are looked up only within the same horizon (queueing._replay), so an older month is never read.
        for month in _expired_months(conn, "idempotency_keys", now - days):
            dropped += partitions.drop_month_partition(conn, "idempotency_keys", month, timeout_ms)
        for month in _expired_months(conn, "webhook_messages", now - days):
            outcome = store.drop_webhook_month(conn, month=month, lock_timeout_ms=timeout_ms)
            if outcome == "busy":
                log.info("retention: webhook month %s kept: a delivery is pending or a fan-out waits", month)
            dropped += WEBHOOK_TABLES if outcome == "dropped" else 0
    except psycopg.errors.LockNotAvailable:
        log.warning("retention: a history table stayed locked for %d ms; its old months wait for the next run",
                    timeout_ms)
    return dropped


def _expired_months(conn: psycopg.Connection, parent: str, cutoff: datetime.datetime) -> list[datetime.date]:
    """`parent`'s months that ended at or before `cutoff`."""
    return [month for _, month in partitions.month_partitions(conn, parent) if _month_end(month) <= cutoff]


def _month_end(month: datetime.date) -> datetime.datetime:
    first_of_next = (month.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    return datetime.datetime(first_of_next.year, first_of_next.month, 1, tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Policy:
    """How long things are kept, and how many rows one statement may touch."""

    body_days: int = 30
    days: int = 365
    batch: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy of MAILER_RETENTION_BODY_DAYS, MAILER_RETENTION_DAYS and MAILER_RETENTION_BATCH."""
        return cls(body_days=settings.retention_body_days, days=settings.retention_days, batch=settings.retention_batch)


@dataclasses.dataclass
class Removed:
    """What one run removed; `complete` is False when the time budget ran out first."""

    bodies_purged: int = 0
    jobs_deleted: int = 0
    job_events_deleted: int = 0
    webhook_messages_deleted: int = 0
    unmatched_events_deleted: int = 0
    queue_jobs_deleted: int = 0
    complete: bool = True

    def total(self) -> int:
        """Rows removed or purged in all."""
        return sum(value for name, value in dataclasses.asdict(self).items() if name != "complete")


def run(
    conn: psycopg.Connection,
    policy: Policy,
    *,
    budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Removed:
    """Run every step until nothing is left or `budget_s` is spent (None: no limit); what was removed.

    `conn` must be idle (no transaction open): each batch commits on its own.
    """
    deadline = None if budget_s is None else clock() + budget_s
    removed = Removed()
    # Bodies first: the deletion takes only purged jobs (body_days <= days), so each has one index to read.
    steps: list[tuple[str, Callable[[], int]]] = [
        ("bodies_purged", lambda: store.purge_job_bodies(conn, body_days=policy.body_days, limit=policy.batch)),
        ("jobs_deleted", lambda: _delete_old_jobs(conn, policy, removed)),
        ("unmatched_events_deleted", lambda: store.delete_unmatched_mailjet_events(
            conn, days=min(UNMATCHED_EVENT_DAYS, policy.days), limit=policy.batch)),
        ("queue_jobs_deleted", lambda: store.delete_finished_queue_jobs(
            conn, hours=QUEUE_JOB_HOURS, limit=policy.batch)),
    ]
    for name, step in steps:
        while True:
            if deadline is not None and clock() >= deadline:
                removed.complete = False
                _log(removed)
                return removed
            with conn.transaction():
                done = step()
            setattr(removed, name, getattr(removed, name) + done)
            if done < policy.batch:
                break
    _log(removed)
    return removed


def _delete_old_jobs(conn: psycopg.Connection, policy: Policy, removed: Removed) -> int:
    """One batch of old jobs, with their audit trails, webhook messages and schedule occurrences."""
    job_ids = store.lock_old_jobs(conn, days=policy.days, limit=policy.batch)
    if not job_ids:
        return 0
    store.allow_retention_deletes(conn)
    removed.webhook_messages_deleted += store.delete_webhook_messages_of_jobs(conn, job_ids=job_ids)
    removed.job_events_deleted += store.delete_job_events_of_jobs(conn, job_ids=job_ids)
    store.delete_schedule_occurrences_of_jobs(conn, job_ids=job_ids)
    return store.delete_jobs(conn, job_ids=job_ids)  # all of them: this transaction holds their locks


def _log(removed: Removed) -> None:
    if removed.total():
        log.info("retention: %s", {k: v for k, v in dataclasses.asdict(removed).items() if v})
