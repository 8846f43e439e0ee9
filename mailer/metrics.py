"""Prometheus metrics: their definitions, the one-line hooks that move them, and the /metrics scrape.

Counters and the histogram live in the process that moves them (the web for accepted jobs and events, the
worker for sends and webhook deliveries). With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it for
the web, and the worker uses it when its environment has it), every process writes them to files there and
a scrape sums the files, so any gunicorn process answers with the same totals. Without it, the process's
own registry is shown. The gauges (queue depth, oldest due job, webhook backlog, oldest transaction) are
read from Postgres, at most once per MAILER_METRICS_DB_INTERVAL_S in each web process: scrapes in between
show that reading (with its age), so any number of scrapers costs the database one round of queries per
interval and process. When the database does not answer within a second, the scrape still answers without them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
import psycopg_pool
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from mailer import db
from mailer.domain import errors, statuses
from mailer.mailjet import events as mailjet_events
from mailer.store import metrics as store
from mailer.store import webhook_replays as replay_store

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
SCRAPE_DB_WAIT_S = 1.0  # for a pooled connection
SCRAPE_STATEMENT_MS = 1000  # for each query of a scrape

if os.environ.get(MULTIPROCESS_ENV):
    # prometheus_client opens its files there as soon as a metric below is defined.
    os.makedirs(os.environ[MULTIPROCESS_ENV], exist_ok=True)

JOBS = Counter(
    "mailer_jobs", "Live apps' jobs that reached a status, by status and priority: queued or scheduled when "
    "accepted, then sent, failed or suppressed by the sender (test apps' jobs: mailer_test_mode_jobs)",
    ["status", "priority"],
)
SEND_LATENCY = Histogram(
    "mailer_send_latency_seconds", "From claiming a batch of due jobs to Mailjet's answer to its send call",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CLAIM_SECONDS = Histogram(
    "mailer_send_claim_seconds", "How long one claim of due jobs took in the database (its statement): flat "
    "while a long snapshot pins the queue's dead rows (store/jobs.py, ClaimFloors)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
SEND_CALL_MESSAGES = Histogram(
    "mailer_send_call_messages", "Messages in one Mailjet send call (at most MAILER_SEND_BATCH_SIZE): few while "
    "mail trickles in, unless the running sender fills its batches (MAILER_SEND_LINGER_MS)",
    buckets=(1, 2, 3, 5, 10, 20, 30, 40, 50),
)
SEND_HANDOFFS = Counter(
    "mailer_send_handoffs", "Wake-ups that asked their process's running sender for their last claim, by outcome: "
    "taken (it claimed for them); full, ended (it stopped keeping up, or ended: they claimed themselves); timeout "
    "(not within MAILER_SEND_HANDOFF_WAIT_MS: its cycle is slow, they claimed themselves)",
    ["outcome"],
)
MAILJET_RESPONSES = Counter(
    "mailer_mailjet_responses", "Mailjet API answers by call (send, lookup) and HTTP status code; "
    "code 'transport' when no answer came (timeout, connection error)", ["call", "code"],
)
EVENTS_RECEIVED = Counter(
    "mailer_events_received", "Mailjet tracking events accepted on /events, by Mailjet event type", ["type"],
)
TEST_MODE_MESSAGES = Counter(
    "mailer_test_mode_messages", "Test apps' messages the worker answered itself instead of Mailjet (test mode), by "
    "outcome: accepted, rejected", ["outcome"],
)
TEST_MODE_JOBS = Counter(
    "mailer_test_mode_jobs", "Test apps' jobs that reached a status (as mailer_jobs counts live ones): queued or "
    "scheduled when accepted, then sent, failed or suppressed by the sender", ["status"],
)
TEST_MODE_EVENTS_LOST = Counter(
    "mailer_test_mode_events_lost", "Test jobs recorded as sent without their test-mode events, because recording "
    "those failed (logged; the rest of their batch was recorded)",
)
TEST_MODE_EVENTS = Counter(
    "mailer_test_mode_events", "Events test mode produced as Mailjet would post them, by Mailjet event type",
    ["type"],
)
DATABASE_READS = Counter(
    "mailer_metrics_database_reads", "Rounds of database queries made for the gauges of /metrics (at most "
    "one per MAILER_METRICS_DB_INTERVAL_S and web process, however many scrapes)",
)
WEBHOOK_DELIVERIES = Counter(
    "mailer_webhook_deliveries", "Outbound webhook attempts by outcome: succeeded, retry (will be attempted "
    "again), failed (out of retries), disabled (the endpoint is)", ["outcome"],
)
WEBHOOK_REPLAY_QUEUED = Counter(
    "mailer_webhook_replay_queued", "Webhook messages queued again for delivery by replays by window "
    "(POST /webhooks/{id}/replay), as the worker expands them",
)
FROM_REFUSED = Counter(
    "mailer_from_refused", "Messages refused (422) because their app may not send from their from domain "
    "(mailer apps create --from-domain)",
)
TEMPLATE_RENDERS = Counter(
    "mailer_template_renders", "Messages rendered from a stored template when accepted (POST /queue, schedules), "
    "by outcome: ok, or refused (422: missing or invalid variables, or a template over a limit)", ["outcome"],
)
WEBHOOK_POSTPONED = Counter(
    "mailer_webhook_rate_limited", "Outbound webhook deliveries put back unattempted because their host was over "
    "MAILER_WEBHOOK_HOST_RATE_PER_S",
)
WEBHOOK_RESOLVER_BUSY = Counter(
    "mailer_webhook_resolver_busy", "Outbound webhook deliveries put back unattempted because no resolver thread "
    "was free for their host name (all busy, or their app's share: MAILER_WEBHOOK_DNS_THREADS)",
)
SEND_RELEASED = Counter(
    "mailer_send_released", "Claimed jobs put back in the queue untried because the claim's Mailjet calls ran "
    "into its deadline (MAILER_SEND_CALL_WINDOW_S; a slow Mailjet or a tight MAILER_MAILJET_MAX_CALLS_PER_S), or "
    "because the sender's liveness connection was down (services/liveness.py)",
)
SEND_RECHECKS = Counter(
    "mailer_send_rechecks", "Claimed jobs whose lost attempt Mailjet did not list yet, put back in the queue to be "
    "looked up again once MAILER_SEND_LISTING_DELAY_S after that attempt has passed, instead of resent",
)
SEND_LATE_RESULTS = Counter(
    "mailer_send_late_results", "Results of a claim that arrived after its jobs were taken over (the sender was "
    "retired as dead or hung, services/recovery.py): recorded nowhere, the jobs are checked with Mailjet instead",
)
SEND_TAKEN_OVER = Counter(
    "mailer_send_taken_over", "Sending jobs requeued because their sender was taken over, by rule (dead, hung)",
    ["rule"],
)
SENDER_CLAIM_OVERDUE = Counter(
    "mailer_sender_claim_overdue", "Times a sender stopped renewing its lease because a claim of it ran past the "
    "longest a live claim takes (hung; taken over once MAILER_SEND_LEASE_S passes)",
)
RETENTION_MONTHS_WAITING = Counter(
    "mailer_retention_months_waiting", "Times retention left a month of jobs past MAILER_RETENTION_DAYS in place "
    "because a job made that month is still scheduled, queued or sending, or ended within MAILER_RETENTION_DAYS "
    "(it is dropped once all ended longer ago)",
)
WEB_REFUSED = Counter(
    "mailer_web_refused", "Requests the web server answered itself before the app, by status: 408 (too slow "
    "to arrive), 413, 414, 431, 400 (bad framing), 503 (request bytes over budget)", ["status"],
)
UNSUBSCRIBES = Counter(
    "mailer_unsubscribes", "One-click unsubscribe requests (POST /unsubscribe/{token}), by outcome: added (a new bulk "
    "suppression), already (the address was already suppressed), bad_token (404)", ["outcome"],
)
REPLICA_READS = Counter(
    "mailer_replica_reads", "Listings (/logs, /stats, dashboard lists) served by the read replica "
    "(DATABASE_REPLICA_URL)",
)
REPLICA_FALLBACKS = Counter(
    "mailer_replica_fallbacks", "Listings served by the primary although a read replica is configured, by reason: "
    "unavailable (no connection within MAILER_REPLICA_TIMEOUT_S, or it failed), error (a query failed on it), "
    "lagging (more than MAILER_REPLICA_MAX_LAG_S behind), not_standby (the server is not in recovery), unknown "
    "(not measured yet, or too long ago)", ["reason"],
)
# The most recent reading of the live web processes (each measures on its own).
REPLICA_LAG = Gauge(
    "mailer_replica_lag_seconds", "How far the read replica was behind the primary at its last measurement "
    "(0 when it had replayed all the primary had written; 0 too without a replica)",
    multiprocess_mode="livemostrecent",
)
REPLICA_USABLE = Gauge(
    "mailer_replica_usable", "1 while listings read from the replica, 0 while they fall back to the primary",
    multiprocess_mode="livemostrecent",
)
REPLICA_FALLBACK_REASONS = ("unavailable", "error", "lagging", "not_standby", "unknown")
_COUNTED_JOB_STATUSES = (statuses.QUEUED, statuses.SCHEDULED, statuses.SENT, statuses.FAILED, statuses.SUPPRESSED)
_WEBHOOK_OUTCOMES = {"succeeded": "succeeded", "pending": "retry", "failed": "failed", "disabled": "disabled"}
_OTHER_EVENT = "other"
HANDOFF_OUTCOMES = ("taken", "full", "ended", "timeout")


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
    for reason in REPLICA_FALLBACK_REASONS:
        REPLICA_FALLBACKS.labels(reason)
    for outcome in HANDOFF_OUTCOMES:
        SEND_HANDOFFS.labels(outcome)
    for outcome in ("ok", "refused"):
        TEMPLATE_RENDERS.labels(outcome)
    for status in _COUNTED_JOB_STATUSES:
        TEST_MODE_JOBS.labels(status)
    for outcome in ("added", "already", "bad_token"):
        UNSUBSCRIBES.labels(outcome)


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


def from_refused(count: int) -> None:
    """Count messages refused for their from domain."""
    FROM_REFUSED.inc(count)


def templates_rendered(ok: int, refused: int) -> None:
    """Count messages rendered from a stored template at intake, and those refused (422)."""
    if ok:
        TEMPLATE_RENDERS.labels("ok").inc(ok)
    if refused:
        TEMPLATE_RENDERS.labels("refused").inc(refused)


def claim_took(seconds: float) -> None:
    """Observe the time of one claim statement."""
    CLAIM_SECONDS.observe(seconds)


def send_call_messages(count: int) -> None:
    """Observe the messages of one Mailjet send call."""
    SEND_CALL_MESSAGES.observe(count)


def send_handoff(outcome: str) -> None:
    """Count one wake-up's hand-off to its process's running sender, by outcome."""
    SEND_HANDOFFS.labels(outcome).inc()


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


def test_mode_answered(accepted: int, rejected: int) -> None:
    """Count the messages of one send call that test mode answered, by outcome."""
    if accepted:
        TEST_MODE_MESSAGES.labels("accepted").inc(accepted)
    if rejected:
        TEST_MODE_MESSAGES.labels("rejected").inc(rejected)


def test_mode_jobs_reached(reached: Iterable[str]) -> None:
    """Count test apps' jobs by the status they reached (steps that are not a job status are not)."""
    for status, count in collections.Counter(reached).items():
        if status in statuses.JOB_STATUSES:
            TEST_MODE_JOBS.labels(status).inc(count)


def test_mode_events_lost(jobs: int) -> None:
    """Count test jobs recorded as sent whose test-mode events could not be recorded."""
    if jobs:
        TEST_MODE_EVENTS_LOST.inc(jobs)


def test_mode_events(names: Iterable[str]) -> None:
    """Count the events test mode produced by their Mailjet event name."""
    for name, count in collections.Counter(names).items():
        TEST_MODE_EVENTS.labels(name).inc(count)


def webhook_delivered(status: str | None) -> None:
    """Count one webhook attempt by the status it left its delivery in."""
    WEBHOOK_DELIVERIES.labels(_WEBHOOK_OUTCOMES.get(status or "", "failed")).inc()


def webhook_resolver_busy() -> None:
    """Count one delivery put back because no resolver thread was free for its host name."""
    WEBHOOK_RESOLVER_BUSY.inc()


def send_released(count: int) -> None:
    """Count claimed jobs put back untried at their claim's deadline."""
    SEND_RELEASED.inc(count)


def send_rechecks(count: int) -> None:
    """Count claimed jobs put back to be looked up again after Mailjet's listing delay."""
    SEND_RECHECKS.inc(count)


def send_late_results(count: int) -> None:
    """Count results that came after their claim was taken over."""
    SEND_LATE_RESULTS.inc(count)


def claims_taken_over(rules: Iterable[str]) -> None:
    """Count sending jobs requeued by the takeover, by rule."""
    for rule, count in collections.Counter(rules).items():
        SEND_TAKEN_OVER.labels(rule).inc(count)


def retention_month_waiting() -> None:
    """Count one expired month of jobs kept because a job of it is still live."""
    RETENTION_MONTHS_WAITING.inc()


def sender_claim_overdue() -> None:
    """Count one sender that stopped renewing its lease under a hung claim."""
    SENDER_CLAIM_OVERDUE.inc()


def unsubscribe(outcome: str) -> None:
    """Count one one-click unsubscribe request by its outcome."""
    UNSUBSCRIBES.labels(outcome).inc()


def replica_read() -> None:
    """Count one listing served by the read replica."""
    REPLICA_READS.inc()


def replica_fallback(reason: str) -> None:
    """Count one listing that the primary served in the replica's stead, and why."""
    REPLICA_FALLBACKS.labels(reason).inc()


def replica_measured(lag_s: float | None, usable: bool) -> None:
    """Record the replica's last measurement: its lag (None: unknown, the gauge keeps the last) and usability."""
    if lag_s is not None:
        REPLICA_LAG.set(lag_s)
    REPLICA_USABLE.set(1 if usable else 0)


def webhook_replay_queued(count: int) -> None:
    """Count messages a replay by window queued again."""
    WEBHOOK_REPLAY_QUEUED.inc(count)


def webhook_postponed() -> None:
    """Count one delivery put back because its host is over its rate."""
    WEBHOOK_POSTPONED.inc()


# --- the scrape --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Reading:
    """One round of the gauges' queries: when it was made (time.monotonic()) and what it found (None when
    the database did not answer)."""

    at: float
    waiting: list[dict[str, Any]] | None = None
    backlog: int = 0
    replays: int = 0
    oldest: dict[str, Any] = dataclasses.field(default_factory=dict)


class DatabaseGauges:
    """A collector of the gauges read from Postgres, read again only when the last reading is older than
    `interval_s` (cheap queries, short timeouts; concurrent scrapes wait for one reading and share it)."""

    def __init__(self, pool: psycopg_pool.ConnectionPool, interval_s: float) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last: _Reading | None = None

    def _reading(self) -> _Reading:
        with self._lock:
            last = self._last
            if last is None or time.monotonic() - last.at >= self._interval_s:
                last = self._last = self._read()
            return last

    def _read(self) -> _Reading:
        DATABASE_READS.inc()
        try:
            with db.connection(self._pool, timeout=SCRAPE_DB_WAIT_S) as conn:
                store.limit_metrics_statement_time(conn, timeout_ms=SCRAPE_STATEMENT_MS)
                waiting = store.count_waiting_jobs(conn)
                backlog = store.count_pending_webhook_deliveries(conn)
                replays = replay_store.count_running_webhook_replays(conn)
                oldest = store.oldest_transaction(conn)
        except (errors.DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("metrics: database gauges unavailable (%s)", type(exc).__name__)
            return _Reading(at=time.monotonic())  # kept for the interval too: a database that is down
        return _Reading(at=time.monotonic(), waiting=waiting, backlog=backlog, replays=replays, oldest=oldest)

    def collect(self) -> Iterator[Metric]:
        reading = self._reading()
        up = GaugeMetricFamily(
            "mailer_metrics_database_up", "1 when the gauges were read from the database, 0 when they could not be"
        )
        up.add_metric([], 0 if reading.waiting is None else 1)
        yield up
        if reading.waiting is None:
            return
        age = GaugeMetricFamily(
            "mailer_metrics_database_age_seconds", "How long ago the gauges read from the database were read"
        )
        age.add_metric([], max(0.0, time.monotonic() - reading.at))
        yield age
        yield from _job_gauges(reading.waiting)
        webhooks = GaugeMetricFamily("mailer_webhook_backlog", "Outbound webhook deliveries still to be made")
        webhooks.add_metric([], reading.backlog)
        yield webhooks
        replays = GaugeMetricFamily(
            "mailer_webhook_replays_running", "Replays by window (POST /webhooks/{id}/replay) not yet fully queued"
        )
        replays.add_metric([], reading.replays)
        yield replays
        yield from _transaction_gauges(reading.oldest)


def _transaction_gauges(oldest: dict[str, Any]) -> Iterator[Metric]:
    age = GaugeMetricFamily(
        "mailer_db_oldest_transaction_age_seconds", "How long the oldest transaction open on the database (other "
        "than the scrape's) has been open: a long one pins the dead rows vacuum would remove",
    )
    age.add_metric([], float(oldest.get("oldest_transaction_s", 0.0)))
    xids = GaugeMetricFamily(
        "mailer_db_oldest_snapshot_age_transactions", "How many transactions old the oldest snapshot held on the "
        "database (other than the scrape's) is: the rows changed since stay for every reader",
    )
    xids.add_metric([], float(oldest.get("oldest_snapshot_xids", 0)))
    feed = GaugeMetricFamily(
        "mailer_activity_feed_lag_seconds", "At most how far GET /activity is behind: how long the oldest "
        "transaction holding a transaction id on the server has been open (the feed waits for it to end)",
    )
    feed.add_metric([], float(oldest.get("oldest_writer_s", 0.0)))
    yield from (age, xids, feed)


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


class _SharedCounters(prometheus_multiprocess.MultiProcessCollector):
    """prometheus_client's collector of the processes' files, skipping a file still empty.

    A process creates its file before sizing it, so for a moment it holds 0 bytes, and reading it fails the
    whole scrape with a 500 (prometheus/client_python#1199, seen here while `mailer worker` started during
    scrapes; a process killed in that moment leaves it empty for good). Files only grow, so one found
    non-empty here is still so when it is read.
    """

    def collect(self) -> Iterable[Metric]:
        """The merged metrics of every non-empty file."""
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            with contextlib.suppress(OSError):  # gone since the glob: nothing to count
                if os.path.getsize(path) > 0:
                    files.append(path)
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return]


class Scrape:
    """What a scrape shows: the counters (of every process, or of this one) and the database gauges."""

    def __init__(self, pool: psycopg_pool.ConnectionPool, db_interval_s: float) -> None:
        if multiprocess_dir():
            self._counters = CollectorRegistry()
            _SharedCounters(self._counters)
        else:
            self._counters = REGISTRY
        self._gauges = DatabaseGauges(pool, db_interval_s)

    def collect(self) -> Iterator[Metric]:
        """Every metric of one scrape."""
        yield from self._counters.collect()
        yield from self._gauges.collect()


def multiprocess_dir() -> str | None:
    """The directory the processes share their metrics through, if there is one."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def exposition(scrape: Scrape) -> bytes:
    """The Prometheus text format of every metric."""
    return generate_latest(scrape)  # type: ignore[arg-type]  # anything with collect() will do
