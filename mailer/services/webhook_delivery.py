"""Deliver outbound webhooks: expand status changes into deliveries, claim due ones, post them (webhook_post),
record each attempt."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import random
import threading
import time
import urllib.parse

import psycopg_pool
from cryptography.fernet import MultiFernet

from mailer import db, metrics
from mailer.config import Settings
from mailer.services import ssrf, webhook_replays, webhook_secrets
from mailer.services.webhook_pacing import JITTER, host_bucket, host_of, postponed, put_back
from mailer.services.webhook_post import Attempt, post
from mailer.store import webhooks as store
from mailer.store.webhooks import ClaimedDelivery

__all__ = [
    "JITTER", "Attempt", "Delivered", "Dispatcher", "claim", "deliver", "deliver_due_batch", "expand", "host_bucket",
    "host_of", "post", "postponed", "put_back", "record",
]

log = logging.getLogger(__name__)

CLAIM_BATCH = 50
# A claimed delivery is leased for the attempt's timeout plus this; a dead worker's lease expires.
LEASE_MARGIN_S = 60.0
# Database connections a dispatcher's threads use at once (claims and records are short): the rest of
# the worker's pool stays free for sending email, however many webhooks are being posted.
DISPATCHER_DB_CONNECTIONS = 2
# One dispatch writes deliveries of waiting status changes for at most this long before claiming.
EXPAND_BUDGET_S = 0.5


@dataclasses.dataclass(frozen=True)
class Delivered:
    """A delivery after one attempt: the attempt and the delivery's new status."""

    delivery: ClaimedDelivery
    attempt: Attempt | None  # None: not attempted, its host was over its rate (put back, still pending)
    status: str | None


def expand(pool: psycopg_pool.ConnectionPool, settings: Settings, budget_s: float = EXPAND_BUDGET_S) -> int:
    """Write the deliveries of committed status changes, a bounded batch per transaction, then top up the
    running replays (behind the live ones); how many."""
    batch, total = settings.webhook_expand_batch, 0
    deadline = time.monotonic() + budget_s
    while True:
        with db.connection(pool) as conn:
            written = store.expand_webhook_fan_outs(conn, max_rows=batch)
        total += written
        if written < batch or time.monotonic() >= deadline:
            return total + webhook_replays.expand(pool, settings)


def claim(pool: psycopg_pool.ConnectionPool, settings: Settings, limit: int = CLAIM_BATCH) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries, a fair share per endpoint, their secrets decrypted; commits at once."""
    # A secret no key decrypts comes back empty: its attempt fails without a post (webhook_post.UNSIGNABLE).
    with db.connection(pool) as conn:
        claimed = store.claim_webhook_deliveries(
            conn, limit=limit, per_endpoint=per_endpoint_limit(settings), per_app=per_app_limit(settings),
            lease_s=settings.webhook_timeout_s + LEASE_MARGIN_S,
        )
        keys = webhook_secrets.cipher(conn, settings) if claimed else None
    return [_decrypted(delivery, keys) for delivery in claimed] if keys else claimed


def _decrypted(delivery: ClaimedDelivery, keys: MultiFernet) -> ClaimedDelivery:
    try:
        secret = webhook_secrets.decrypt(keys, delivery.secret)
        previous = None if delivery.previous_secret is None else webhook_secrets.decrypt(keys, delivery.previous_secret)
    except webhook_secrets.SecretUnreadable as exc:
        log.error("webhook endpoint %s: %s", delivery.endpoint_id, exc)
        secret, previous = "", None
    return dataclasses.replace(delivery, secret=secret, previous_secret=previous)


def per_endpoint_limit(settings: Settings) -> int:
    """Posts one endpoint may have in flight at once (across workers): a quarter of one worker's."""
    return max(1, settings.webhook_concurrency // 4)


def per_app_limit(settings: Settings) -> int:
    """Posts one app's endpoints may have in flight at once (across workers): MAILER_WEBHOOK_APP_CONCURRENCY,
    else half of one worker's, so that one app's slow subscribers leave slots to the others."""
    return settings.webhook_app_concurrency or max(1, settings.webhook_concurrency // 2)


# --- recording --------------------------------------------------------------------------------


def retry_delay(attempts: int, settings: Settings, rng: random.Random | None = None) -> float | None:
    """Seconds before the next attempt after `attempts` failed ones (with jitter); None when out of retries."""
    schedule = settings.webhook_retry_schedule
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * (rng or random).uniform(1 - JITTER, 1 + JITTER)


def record(
    pool: psycopg_pool.ConnectionPool,
    delivery: ClaimedDelivery,
    attempt: Attempt,
    settings: Settings,
    rng: random.Random | None = None,
) -> str | None:
    """Log the attempt, move the delivery on, and keep the endpoint's health; the delivery's status."""
    gone = attempt.status_code == 410  # Standard Webhooks: 410 means "stop sending to me"
    retry_in_s = None
    if attempt.succeeded:
        status = "succeeded"
    elif gone:
        status = "disabled"
    else:
        retry_in_s = retry_delay(delivery.attempts + 1, settings, rng)
        status = "failed" if retry_in_s is None else "pending"
    with db.connection(pool) as conn:
        disabled = store.update_webhook_endpoint_health(
            conn, endpoint_id=delivery.endpoint_id, succeeded=attempt.succeeded, gone=gone,
            disable_after_s=settings.webhook_disable_after_s,
        )
        if disabled and status == "pending":
            status = "disabled"
        recorded = store.record_webhook_attempt(
            conn, delivery_id=delivery.id, message_created_at=delivery.message_created_at,
            attempted_at=attempt.attempted_at, status_code=attempt.status_code,
            latency_ms=attempt.latency_ms, error=attempt.error, status=status, retry_in_s=retry_in_s,
        )
    if disabled:
        # In a transaction of its own, after the endpoint's disabling committed: the app's lock waits for an
        # expansion that read the endpoint still enabled (migration 0024), and holding nothing else while
        # waiting for it cannot deadlock with a PATCH (app, then endpoint).
        with db.connection(pool) as conn:
            store.lock_app_of_webhook_endpoint(conn, endpoint_id=delivery.endpoint_id)
            store.disable_webhook_deliveries(conn, endpoint_id=delivery.endpoint_id)
    _log_attempt(delivery, attempt, recorded)
    metrics.webhook_delivered(recorded or status)
    if disabled and not attempt.succeeded:
        log.warning("webhook endpoint %s is disabled after: %s", delivery.endpoint_id,
                    without_url(attempt.error, delivery.url))
    return recorded


def _log_attempt(delivery: ClaimedDelivery, attempt: Attempt, status: str | None) -> None:
    """One line per attempt, with the request id of the API call that queued the email it tells about.
    Never the URL (it may carry the subscriber's own token), the secrets or the body."""
    log.log(
        logging.INFO if attempt.succeeded else logging.WARNING, "webhook delivery %s", status,
        extra={
            "delivery_id": delivery.id, "webhook_id": delivery.message_id, "endpoint_id": str(delivery.endpoint_id),
            "type": delivery.type, "attempt": delivery.attempts + 1, "status_code": attempt.status_code,
            "latency_ms": attempt.latency_ms, "status": status, "error": without_url(attempt.error, delivery.url),
            "job_id": delivery.job_id, "request_id": delivery.request_id,
        },
    )


def without_url(error: str | None, url: str) -> str | None:
    """An attempt's error for the log: connection errors quote the URL, whose path or query may hold a token."""
    if error is None:
        return None
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    for piece in (url, path, parts.query):
        if len(piece) > 1:
            error = error.replace(piece, "[url]")
    return error


def deliver(
    pool: psycopg_pool.ConnectionPool, delivery: ClaimedDelivery, settings: Settings, rng: random.Random | None = None
) -> Delivered:
    """One attempt of one claimed delivery: post it, record it (or put it back while its host is over its rate,
    or no resolver thread is free)."""
    if postponed(pool, delivery, settings) is not None:
        return Delivered(delivery, None, "pending")
    try:
        attempt = post(delivery, settings)
    except ssrf.ResolverBusy as busy:
        put_back(pool, delivery, busy)
        return Delivered(delivery, None, "pending")
    return Delivered(delivery, attempt, record(pool, delivery, attempt, settings, rng))


def deliver_due_batch(
    pool: psycopg_pool.ConnectionPool, settings: Settings, limit: int = CLAIM_BATCH, rng: random.Random | None = None
) -> list[Delivered]:
    """Expand waiting status changes, claim a batch, post all at once (each recorded when done), wait for all."""
    expand(pool, settings)
    claimed = claim(pool, settings, limit)
    if not claimed:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(claimed), thread_name_prefix="webhook") as executor:
        return list(executor.map(lambda delivery: deliver(pool, delivery, settings, rng), claimed))


class Dispatcher:
    """A worker process's webhook posts: up to `webhook_concurrency` at once, refilled as each ends.

    `dispatch()` only claims and hands deliveries to the threads, so the task calling it holds a
    Procrastinate slot for milliseconds: slow subscribers never keep the worker from sending email.
    """

    def __init__(self, pool: psycopg_pool.ConnectionPool, settings: Settings) -> None:
        self._pool, self._settings = pool, settings
        self._capacity = settings.webhook_concurrency
        self._executor = concurrent.futures.ThreadPoolExecutor(self._capacity, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._claiming = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self._db_slots = threading.BoundedSemaphore(DISPATCHER_DB_CONNECTIONS)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def dispatch(self, expand_first: bool = True) -> int:
        """Write the deliveries of new status changes, then claim and start as many as there are free threads."""
        if not self._claiming.acquire(blocking=False):
            return 0  # another thread is claiming right now; it takes what is due
        started = 0
        try:
            if expand_first:
                with self._db_slots:
                    expand(self._pool, self._settings)
            while not self._closed:
                with self._lock:
                    free = self._capacity - self._in_flight
                want = min(free, CLAIM_BATCH)
                if want <= 0:
                    break
                with self._db_slots:
                    claimed = claim(self._pool, self._settings, want)
                with self._lock:
                    self._in_flight += len(claimed)
                for delivery in claimed:
                    self._executor.submit(self._deliver, delivery)
                started += len(claimed)
                if len(claimed) < want:
                    break
        finally:
            self._claiming.release()
        return started

    def _deliver(self, delivery: ClaimedDelivery) -> None:
        try:
            with self._db_slots:
                waits = postponed(self._pool, delivery, self._settings) is not None
            if not waits:
                try:
                    attempt = post(delivery, self._settings)
                except ssrf.ResolverBusy as busy:
                    with self._db_slots:
                        put_back(self._pool, delivery, busy)
                else:
                    with self._db_slots:
                        record(self._pool, delivery, attempt, self._settings)
        except Exception:  # the lease expires and another attempt follows; never log the secrets
            log.exception("recording webhook delivery %s failed", delivery.id)
        finally:
            with self._lock:
                self._in_flight -= 1
        try:
            self.dispatch(expand_first=False)  # refill at once rather than at the next tick
        except Exception as exc:
            log.warning("claiming webhook deliveries failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Wait for the posts in flight and stop the threads."""
        with self._claiming:  # a claim in progress hands its deliveries over first
            self._closed = True
        self._executor.shutdown(wait=True)
