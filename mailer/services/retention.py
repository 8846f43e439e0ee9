"""Retention: purge message bodies; drop the months of jobs (and what hangs off them) past the horizon.

Jobs, their recipients, audit trails and addresses are kept in month partitions of the job id (0028) and go
a whole month at a time (drop_expired_partitions, from the hourly housekeeping). Every other step works a
bounded batch at a time, each batch in its own short transaction that locks only its
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

from mailer import metrics
from mailer.config import Settings
from mailer.mailjet import events as mailjet_events
from mailer.store import partitions as partitions_store
from mailer.store import retention as store

log = logging.getLogger(__name__)

# Events that never matched a message of ours: a message they could still match has its send result
# stored within minutes, so these are noise (with addresses in them) after this long.
UNMATCHED_EVENT_DAYS = 30
# Procrastinate's finished jobs (the worker deletes successful ones at once; failed ones stay for a look).
QUEUE_JOB_HOURS = 7 * 24
# The parents one month of webhook history spans: messages, fan-outs, deliveries, attempts.
WEBHOOK_TABLES = 4


# The month partitions of a job's story (0028), in the order a month is dropped: its jobs first, so that a drop
# giving up halfway (lock timeout) leaves rows no job leads to, never a job without its recipients.
JOB_MONTH_TABLES = ("jobs_done", "recipients", "job_events", "recipient_addresses")


class _MonthWaits(Exception):
    """A job of the month is still live, or ended within the horizon: its drop is undone."""


def drop_expired_partitions(conn: psycopg.Connection, settings: Settings, now: datetime.datetime) -> int:
    """Drop the month partitions of history past their horizon, where it is safe; how many were dropped."""
    return drop_expired_job_months(conn, settings, now) + _drop_expired_time_history(conn, settings, now)


def drop_expired_job_months(conn: psycopg.Connection, settings: Settings, now: datetime.datetime) -> int:
    """Drop the job months wholly older than MAILER_RETENTION_DAYS whose jobs all ended more than that long ago;
    how many partitions went.

    A month whose job is still scheduled, queued or sending, or ended within the horizon, waits (logged, counted
    in mailer_retention_months_waiting): its recipients and audit trail are in that month's partitions.
    """
    horizon = now - datetime.timedelta(days=settings.retention_days)
    # Each step in a transaction of its own (the pool's connections open one at the first statement): a drop's
    # lock on its parent is held for that drop only.
    with conn.transaction():
        months = sorted({month for table in JOB_MONTH_TABLES
                         for _, month in partitions_store.month_partitions(conn, table)})
    dropped = 0
    for month in months:
        if _month_end(month) > horizon:
            break
        try:
            dropped += _drop_job_month(conn, month, horizon, settings.partition_lock_timeout_ms)
        except _MonthWaits as waits:
            log.warning("retention: job month %s waits: a job made then %s", f"{month:%Y-%m}", waits)
            metrics.retention_month_waiting()
        except psycopg.errors.LockNotAvailable:
            log.warning("retention: job month %s not dropped: a table stayed busy; next hour", f"{month:%Y-%m}")
            break
    return dropped


_LIVE = "is still scheduled, queued or sending"
_RECENT = "ended less than MAILER_RETENTION_DAYS ago"


def _drop_job_month(conn: psycopg.Connection, month: datetime.date, horizon: datetime.datetime,
                    lock_timeout_ms: int) -> int:
    with conn.transaction():
        if store.month_has_live_jobs(conn, month=month):
            raise _MonthWaits(_LIVE)
        if store.month_has_recently_ended_jobs(conn, month=month, ended_after=horizon):
            raise _MonthWaits(_RECENT)
    dropped = 0
    with conn.transaction():
        # Checked again under the drop's lock: a job of the month a retry moved back to jobs_live, or that ended
        # since, shows now and undoes the drop; none can after it (the partition is gone).
        store.lock_jobs_done(conn, lock_timeout_ms=lock_timeout_ms)
        if store.month_has_recently_ended_jobs(conn, month=month, ended_after=horizon):
            raise _MonthWaits(_RECENT)
        dropped += partitions_store.drop_month_partition(conn, JOB_MONTH_TABLES[0], month, lock_timeout_ms)
        if store.month_has_live_jobs(conn, month=month):
            raise _MonthWaits(_LIVE)
    for table in JOB_MONTH_TABLES[1:]:
        dropped += partitions_store.drop_month_partition(conn, table, month, lock_timeout_ms)
    with conn.transaction():
        store.delete_schedule_occurrences_of_month(conn, month=month)
    return dropped


def _month_end(month: datetime.date) -> datetime.datetime:
    following = (month.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    return datetime.datetime(following.year, following.month, 1, tzinfo=datetime.UTC)


def _drop_expired_time_history(conn: psycopg.Connection, settings: Settings, now: datetime.datetime) -> int:
    """The months of the time-keyed history (migration 0029) wholly older than MAILER_RETENTION_DAYS; how many
    partitions went. A parent too busy to lock waits for the next run."""
    days = datetime.timedelta(days=settings.retention_days)
    timeout_ms = settings.partition_lock_timeout_ms
    dropped = 0
    try:
        # A new event may still land in a month its plausible time reaches (mailer/mailjet/events.py).
        for month in _expired_months(conn, "mailjet_events", now - max(days, mailjet_events.PLAUSIBLE_PAST)):
            dropped += partitions_store.drop_month_partition(conn, "mailjet_events", month, timeout_ms)
        # Keys are looked up only within the same horizon (queueing._replay), so an older month is never read.
        for month in _expired_months(conn, "idempotency_keys", now - days):
            dropped += partitions_store.drop_month_partition(conn, "idempotency_keys", month, timeout_ms)
        # An activity feed cursor older than this goes on from the oldest change kept (README, "Activity feed").
        for month in _expired_months(conn, "recipient_activity", now - days):
            dropped += partitions_store.drop_month_partition(conn, "recipient_activity", month, timeout_ms)
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
    # A transaction of its own: read in the pool's implicit one, it would hold every later drop's lock (each
    # drop a savepoint of it) until the run ends.
    with conn.transaction():
        partitions = partitions_store.month_partitions(conn, parent)
    return [month for _, month in partitions if _month_end(month) <= cutoff]


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
    unmatched_events_deleted: int = 0
    queue_jobs_deleted: int = 0
    webhook_replays_deleted: int = 0
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
    steps: list[tuple[str, Callable[[], int]]] = [
        ("bodies_purged", lambda: store.purge_job_bodies(conn, body_days=policy.body_days, limit=policy.batch)),
        ("unmatched_events_deleted", lambda: store.delete_unmatched_mailjet_events(
            conn, days=min(UNMATCHED_EVENT_DAYS, policy.days), limit=policy.batch)),
        ("queue_jobs_deleted", lambda: store.delete_finished_queue_jobs(
            conn, hours=QUEUE_JOB_HOURS, limit=policy.batch)),
        ("webhook_replays_deleted", lambda: store.delete_finished_webhook_replays(
            conn, days=policy.days, limit=policy.batch)),
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


def _log(removed: Removed) -> None:
    if removed.total():
        log.info("retention: %s", {k: v for k, v in dataclasses.asdict(removed).items() if v})
