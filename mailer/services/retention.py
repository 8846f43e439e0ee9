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
from mailer.store import retention as store

log = logging.getLogger(__name__)

# Events that never matched a message of ours: a message they could still match has its send result
# stored within minutes, so these are noise (with addresses in them) after this long.
UNMATCHED_EVENT_DAYS = 30
# Procrastinate's finished jobs (the worker deletes successful ones at once; failed ones stay for a look).
QUEUE_JOB_HOURS = 7 * 24


def drop_expired_partitions(conn: psycopg.Connection, settings: Settings, now: datetime.datetime) -> int:
    """Drop the month partitions of history past their horizon, where it is safe; how many were dropped."""
    return 0


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
    idempotency_keys_deleted: int = 0
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
        ("webhook_messages_deleted", lambda: store.delete_old_webhook_messages(
            conn, days=policy.days, limit=policy.batch)),
        ("idempotency_keys_deleted", lambda: store.delete_old_idempotency_keys(
            conn, days=policy.days, limit=policy.batch)),
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
