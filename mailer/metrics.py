"""Prometheus metrics: their definitions, the one-line hooks that move them, and the /metrics scrape.

Counters and the histogram live in the process that moves them (the web for accepted jobs and events, the
worker for sends and webhook deliveries). With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it for
the web, and the worker uses it when its environment has it), every process writes them to files there and
a scrape sums the files, so any gunicorn process answers with the same totals. Without it, the process's
own registry is shown. The gauges (queue depth, oldest due job, webhook backlog) are read from Postgres
at scrape time; when the database does not answer within a second, the scrape still answers without them.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
import psycopg_pool
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from mailer import db
from mailer.domain import errors, statuses
from mailer.mailjet import events as mailjet_events
from mailer.store import metrics as store

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
SCRAPE_DB_WAIT_S = 1.0  # for a pooled connection
SCRAPE_STATEMENT_MS = 1000  # for each query of a scrape

if os.environ.get(MULTIPROCESS_ENV):
    # prometheus_client opens its files there as soon as a metric below is defined.
    os.makedirs(os.environ[MULTIPROCESS_ENV], exist_ok=True)

JOBS = Counter(
    "mailer_jobs", "Jobs that reached a status, by status and priority: queued or scheduled when accepted, "
    "then sent, failed or suppressed by the sender", ["status", "priority"],
)
SEND_LATENCY = Histogram(
    "mailer_send_latency_seconds", "From claiming a batch of due jobs to Mailjet's answer to its send call",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MAILJET_RESPONSES = Counter(
    "mailer_mailjet_responses", "Mailjet API answers by call (send, lookup) and HTTP status code; "
    "code 'transport' when no answer came (timeout, connection error)", ["call", "code"],
)
EVENTS_RECEIVED = Counter(
    "mailer_events_received", "Mailjet tracking events accepted on /events, by Mailjet event type", ["type"],
)
WEBHOOK_DELIVERIES = Counter(
    "mailer_webhook_deliveries", "Outbound webhook attempts by outcome: succeeded, retry (will be attempted "
    "again), failed (out of retries), disabled (the endpoint is)", ["outcome"],
)
WEB_REFUSED = Counter(
    "mailer_web_refused", "Requests the web server answered itself before the app, by status: 408 (too slow "
    "to arrive), 413, 414, 431, 400 (bad framing)", ["status"],
)
_COUNTED_JOB_STATUSES = (statuses.QUEUED, statuses.SCHEDULED, statuses.SENT, statuses.FAILED, statuses.SUPPRESSED)
_WEBHOOK_OUTCOMES = {"succeeded": "succeeded", "pending": "retry", "failed": "failed", "disabled": "disabled"}
_OTHER_EVENT = "other"


# (status, priority) → its series: labels() validates and locks on every call, once per accepted request.
_JOB_SERIES: dict[tuple[str, str], Any] = {}


def _zeros() -> None:
    """Start the known series at 0, so that a rate over the first event is right."""
    for status in _COUNTED_JOB_STATUSES:
        for priority in statuses.PRIORITIES:
            _JOB_SERIES[status, priority] = JOBS.labels(status, priority)
    for outcome in _WEBHOOK_OUTCOMES.values():
        WEBHOOK_DELIVERIES.labels(outcome)
    for name in (*mailjet_events.EVENT_STATUS, _OTHER_EVENT):
        EVENTS_RECEIVED.labels(name)


_zeros()


# --- hooks -------------------------------------------------------------------------------------


def jobs_reached(transitions: Iterable[tuple[str, str]]) -> None:
    """Count jobs by (status reached, priority); steps that are not a job status (retry_scheduled) are not."""
    counts: dict[tuple[str, str], int] = {}  # (a dict, not collections.Counter: this runs on every request)
    for transition in transitions:
        counts[transition] = counts.get(transition, 0) + 1
    for (status, priority), count in counts.items():
        if status in statuses.JOB_STATUSES:
            series = _JOB_SERIES.get((status, priority)) or JOBS.labels(status, priority)
            series.inc(count)


def mailjet_answered(call: str, status_code: int | None, claimed_at: float | None = None) -> None:
    """Count one Mailjet answer; for a send, observe the time since its batch was claimed (time.monotonic())."""
    MAILJET_RESPONSES.labels(call, str(status_code) if status_code is not None else "transport").inc()
    if claimed_at is not None:
        SEND_LATENCY.observe(time.monotonic() - claimed_at)


def events_received(names: Iterable[str]) -> None:
    """Count Mailjet events by their event name (unknown names as 'other')."""
    for name, count in collections.Counter(names).items():
        key = name.strip().lower()
        EVENTS_RECEIVED.labels(key if key in mailjet_events.EVENT_STATUS else _OTHER_EVENT).inc(count)


def webhook_delivered(status: str | None) -> None:
    """Count one webhook attempt by the status it left its delivery in."""
    WEBHOOK_DELIVERIES.labels(_WEBHOOK_OUTCOMES.get(status or "", "failed")).inc()


# --- the scrape --------------------------------------------------------------------------------


class DatabaseGauges:
    """A collector of the gauges read from Postgres at each scrape (cheap queries, short timeouts)."""

    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "mailer_metrics_database_up", "1 when this scrape read the gauges from the database, 0 when it could not"
        )
        try:
            with db.connection(self._pool, timeout=SCRAPE_DB_WAIT_S) as conn:
                store.limit_metrics_statement_time(conn, timeout_ms=SCRAPE_STATEMENT_MS)
                waiting = store.count_waiting_jobs(conn)
                backlog = store.count_pending_webhook_deliveries(conn)
        except (errors.DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("metrics: database gauges unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _job_gauges(waiting)
        webhooks = GaugeMetricFamily("mailer_webhook_backlog", "Outbound webhook deliveries still to be made")
        webhooks.add_metric([], backlog)
        yield webhooks


def _job_gauges(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "mailer_jobs_waiting", "Jobs not final yet (scheduled, queued, sending), by status and priority",
        labels=["status", "priority"],
    )
    depth = GaugeMetricFamily(
        "mailer_queue_depth", "Jobs due to be sent now (queued, or scheduled and due), by priority", labels=["priority"]
    )
    oldest = GaugeMetricFamily(
        "mailer_queue_oldest_age_seconds", "How long the longest-waiting due job has been due, by priority",
        labels=["priority"],
    )
    for status in (statuses.SCHEDULED, statuses.QUEUED, statuses.SENDING):
        for priority in statuses.PRIORITIES:
            jobs.add_metric([status, priority], sum(row["jobs"] for row in rows if
                                                    (row["status"], row["priority"]) == (status, priority)))
    for priority in statuses.PRIORITIES:
        mine = [row for row in rows if row["priority"] == priority]
        depth.add_metric([priority], sum(row["due"] for row in mine))
        oldest.add_metric([priority], max((float(row["oldest_due_s"]) for row in mine), default=0.0))
    yield from (jobs, depth, oldest)


class _Scrape:
    """What one scrape shows: the counters (of every process, or of this one) and the database gauges."""

    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        if multiprocess_dir():
            self._counters = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(self._counters)
        else:
            self._counters = REGISTRY
        self._gauges = DatabaseGauges(pool)

    def collect(self) -> Iterator[Metric]:
        yield from self._counters.collect()
        yield from self._gauges.collect()


def multiprocess_dir() -> str | None:
    """The directory the processes share their metrics through, if there is one."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def exposition(pool: psycopg_pool.ConnectionPool) -> bytes:
    """The Prometheus text format of every metric."""
    return generate_latest(_Scrape(pool))  # type: ignore[arg-type]  # anything with collect() will do
