"""Deliver outbound webhooks: claim due deliveries, post them (guarded, signed, bounded), record each attempt."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import socket
import threading
import time
import urllib.parse

import certifi
import psycopg_pool
import urllib3
from cryptography.fernet import MultiFernet

from mailer import db, metrics
from mailer.config import Settings
from mailer.services import rate_limits, ssrf, webhook_secrets, webhooks
from mailer.store import webhooks as store
from mailer.store.webhooks import ClaimedDelivery

log = logging.getLogger(__name__)

CLAIM_BATCH = 50
# Read at most this much of a subscriber's answer (only to quote it in an attempt's error).
MAX_RESPONSE_BYTES = 4096
MAX_ERROR_CHARS = 300
# A claimed delivery is leased for the attempt's timeout plus this; a dead worker's lease expires.
LEASE_MARGIN_S = 60.0
JITTER = 0.2  # each retry delay is stretched or shrunk by up to 20 %
# Database connections a dispatcher's threads use at once (claims and records are short): the rest of
# the worker's pool stays free for sending email, however many webhooks are being posted.
DISPATCHER_DB_CONNECTIONS = 2
USER_AGENT = "mailer-webhooks/1"
# One dispatch writes deliveries of waiting status changes for at most this long before claiming.
EXPAND_BUDGET_S = 0.5


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one POST to a subscriber came to."""

    attempted_at: dt.datetime
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


@dataclasses.dataclass(frozen=True)
class Delivered:
    """A delivery after one attempt: the attempt and the delivery's new status."""

    delivery: ClaimedDelivery
    attempt: Attempt | None  # None: not attempted, its host was over its rate (put back, still pending)
    status: str | None


def expand(pool: psycopg_pool.ConnectionPool, settings: Settings, budget_s: float = EXPAND_BUDGET_S) -> int:
    """Write the deliveries of committed status changes, a bounded batch per transaction; how many."""
    batch, total = settings.webhook_expand_batch, 0
    deadline = time.monotonic() + budget_s
    while True:
        with db.connection(pool) as conn:
            written = store.expand_webhook_fan_outs(conn, max_rows=batch)
        total += written
        if written < batch or time.monotonic() >= deadline:
            return total


def claim(pool: psycopg_pool.ConnectionPool, settings: Settings, limit: int = CLAIM_BATCH) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries, a fair share per endpoint; the lease commits at once. Their
    secrets come back decrypted (one that cannot be is empty: the attempt fails without a post)."""
    with db.connection(pool) as conn:
        claimed = store.claim_webhook_deliveries(
            conn, limit=limit, per_endpoint=per_endpoint_limit(settings),
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


# --- posting ----------------------------------------------------------------------------------

# What an attempt's log says when no HTTP answer came. Deliberately coarse: a refused connection, a reset,
# a TLS failure and a closed port all read the same, so the log cannot be used to scan ports.
REFUSED_ADDRESS = "refused address"
CONNECTION_FAILED = "connection failed"
TIMEOUT = "timeout"
NOT_RESOLVED = "name not resolved"
UNSIGNABLE = "secret unreadable"


class _Guard:
    """One attempt's sockets: each checked against the SSRF rules once connected, all cut at the deadline."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def adopt(self, sock: socket.socket) -> socket.socket:
        try:
            ssrf.check_peer(sock.getpeername(), self.allow_private)
        except (ssrf.UnsafeURL, OSError):
            sock.close()
            raise
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("the attempt's deadline passed")
            self._sockets.append(sock)
        return sock

    def expire(self) -> None:
        """The deadline: cut every connection, which ends a read the subscriber is dripping out."""
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _guarded(sock: socket.socket) -> socket.socket:
    guard: _Guard | None = getattr(_current, "guard", None)
    if guard is None:  # only post() opens these connections; never connect unchecked
        sock.close()
        raise ssrf.UnsafeURL("connection opened outside of an attempt")
    return guard.adopt(sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded(super()._new_conn())


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded(super()._new_conn())


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection  # type: ignore[assignment]  # a subclass of the expected class


def ca_certs() -> str:
    """The CA bundle subscribers' certificates are verified against."""
    return certifi.where()


def _pool_for(
    target: ssrf.Target, address: ssrf.IPAddress, scheme: str, timeout_s: float
) -> urllib3.HTTPConnectionPool:
    """A connection pool to `address` itself (the checked one: no second lookup), speaking to the host
    name: TLS sends it as SNI and verifies the certificate against it."""
    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    if scheme == "https":
        return _HTTPSPool(
            str(address), target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs(),
        )
    return _HTTPPool(str(address), target.port, timeout=timeout, retries=False, maxsize=1)


def _request_target(url: str) -> tuple[str, str, dict[str, str]]:
    """The scheme, the path with its query, and the Host (and basic auth) headers of a URL."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    headers = {"host": host}
    if parts.username is not None:
        auth = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers.update(urllib3.util.make_headers(basic_auth=auth))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, path, headers


def post(delivery: ClaimedDelivery, settings: Settings) -> Attempt:
    """POST one delivery, signed, never following redirects, within the timeout; never raises.

    The host name is resolved once, every address checked, and the connection made only to a checked
    address (the Host header, SNI and certificate check still use the name), so DNS rebinding cannot
    redirect it; errors are recorded coarsely (CONNECTION_FAILED, TIMEOUT, REFUSED_ADDRESS, HTTP status)."""
    attempted_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    guard = _Guard(settings.webhook_allow_private)
    deadline = threading.Timer(settings.webhook_timeout_s, guard.expire)
    deadline.daemon = True
    status_code: int | None = None
    error: str | None = None
    body = delivery.body.encode("utf-8")
    timestamp = int(time.time())
    live = [delivery.secret] + ([delivery.previous_secret] if delivery.previous_secret else [])
    _current.guard = guard
    deadline.start()
    try:
        if not delivery.secret:
            raise _Unsignable
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "accept-encoding": "identity",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhooks.signature_header(live, delivery.message_id, timestamp, body),
        }
        scheme, path, target_headers = _request_target(delivery.url)
        dns_timeout_s = min(settings.webhook_dns_timeout_s, settings.webhook_timeout_s)
        target, addresses = ssrf.check_url(delivery.url, settings.webhook_allow_private, dns_timeout_s)
        response = _post_to_first(
            target, addresses, scheme, path, body, {**headers, **target_headers}, settings.webhook_timeout_s
        )
        try:
            status_code = response.status
            response.read(MAX_RESPONSE_BYTES, decode_content=False)
        finally:
            response.release_conn()
            response.close()
        if 300 <= status_code < 400:
            error = f"HTTP {status_code}: redirects are not followed"
        elif not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except _Unsignable:
        error = UNSIGNABLE
    except ssrf.Unresolvable:
        error = NOT_RESOLVED
    except ssrf.UnsafeURL:
        error = REFUSED_ADDRESS
    except urllib3.exceptions.NewConnectionError:  # refused, unreachable (a subclass of the connect timeout)
        error = TIMEOUT if guard.expired else CONNECTION_FAILED
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if guard.expired or isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
            error = TIMEOUT
        else:
            error = CONNECTION_FAILED
    finally:
        deadline.cancel()
        _current.guard = None
    latency_ms = round((time.monotonic() - started) * 1000)
    return Attempt(attempted_at=attempted_at, status_code=status_code, latency_ms=latency_ms, error=error)


class _Unsignable(Exception):
    """The delivery's secret could not be decrypted: nothing is sent."""


def _post_to_first(
    target: ssrf.Target,
    addresses: list[ssrf.IPAddress],
    scheme: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
) -> urllib3.BaseHTTPResponse:
    """POST to the first of the checked addresses that takes the connection."""
    failure: Exception | None = None
    for address in addresses:
        pool = _pool_for(target, address, scheme, timeout_s)
        try:
            return pool.urlopen(
                "POST", path, body=body, headers=headers, redirect=False, retries=False, preload_content=False,
                assert_same_host=False, release_conn=False,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # nothing was sent: the next address may answer
            failure = exc
            pool.close()
    raise failure or OSError("no address")


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
            conn, delivery_id=delivery.id, attempted_at=attempt.attempted_at, status_code=attempt.status_code,
            latency_ms=attempt.latency_ms, error=attempt.error, status=status, retry_in_s=retry_in_s,
        )
        if disabled:
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


def host_of(url: str) -> str:
    """The subscriber host a delivery counts against (its rate limit's bucket)."""
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def postponed(pool: psycopg_pool.ConnectionPool, delivery: ClaimedDelivery, settings: Settings) -> float | None:
    """Take a token of the delivery's host (MAILER_WEBHOOK_HOST_RATE_PER_S); when there is none, put the
    delivery back until there will be one (not an attempt, not a failure) and return that wait."""
    rate = settings.webhook_host_rate_per_s
    if rate <= 0:
        return None
    with db.autocommit(pool) as conn:
        decision = rate_limits.take(conn, f"webhook-host:{host_of(delivery.url)}", rate, max(1.0, rate))
        if decision.granted:
            return None
        # jitter, so that the deliveries waiting for one host do not all come back at once
        wait = decision.retry_after_s * (1 + JITTER * random.random()) + 0.01  # noqa: S311  # not for security
        store.postpone_webhook_delivery(conn, delivery_id=delivery.id, delay_s=wait)
    metrics.webhook_postponed()
    return wait


def deliver(
    pool: psycopg_pool.ConnectionPool, delivery: ClaimedDelivery, settings: Settings, rng: random.Random | None = None
) -> Delivered:
    """One attempt of one claimed delivery: post it, record it (or put it back while its host is over its rate)."""
    if postponed(pool, delivery, settings) is not None:
        return Delivered(delivery, None, "pending")
    attempt = post(delivery, settings)
    return Delivered(delivery, attempt, record(pool, delivery, attempt, settings, rng))


def deliver_due_batch(
    pool: psycopg_pool.ConnectionPool, settings: Settings, limit: int = CLAIM_BATCH, rng: random.Random | None = None
) -> list[Delivered]:
    """Expand waiting status changes, claim a batch, post every delivery at once (each recorded as soon as
    it is done), wait for all."""
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
        """Write the deliveries of new status changes, then claim as many due deliveries as there are free
        threads and start them; how many."""
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
                attempt = post(delivery, self._settings)
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
