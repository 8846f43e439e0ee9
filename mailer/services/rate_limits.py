"""Rate limits whose state lives in Postgres, so they hold across processes and machines.

Each limit is a token bucket (one row of rate_limit_buckets): it holds at most `burst` tokens, gains
`rate_per_s` tokens a second, and every request or call takes one. A take is one statement; run it on its
own (db.autocommit), never inside a request's main transaction, which would hold its row lock to the end
(through the commit's WAL flush, so one app's requests would wait for each other's fsyncs).

The per-app request limit (RequestLimit) spares most requests that statement: a web process takes several of
an app's tokens at once and spends them on its next requests for up to MAILER_RATE_LIMIT_LEASE_MS. A lease
asks for what the last one spent, twice that if it ran out early, at most rate x lease (so one at a time at
low rates), and for one after the bucket could not fill the last (near the limit, each request takes its own
token, as without leases); what a lease leaves unspent goes back with the next take. Every request
still spends a token of the one bucket, so no more pass than it grants (burst + rate x time) across processes
and machines; a window shorter than a lease may in addition see the tokens taken just before it, at most
rate x lease per process.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from collections.abc import Callable

import psycopg
import psycopg_pool

from mailer import db, store
from mailer.config import Settings
from mailer.domain import errors
from mailer.store.rate_limits import Decision, Lease

log = logging.getLogger(__name__)

MAILJET_KEY = "mailjet"
GRANTED = Decision(granted=True, retry_after_s=0.0)


def take(conn: psycopg.Connection, key: str, rate_per_s: float, burst: float, cost: float = 1) -> Decision:
    """Take `cost` tokens from bucket `key` if it has them; a rate of 0 means no limit."""
    if rate_per_s <= 0:
        return GRANTED
    if not 0 < cost <= burst:
        raise ValueError(f"a take of {cost} tokens can never be granted by a bucket of {burst}")
    return store.take_rate_limit_tokens(conn, key=key, rate_per_s=rate_per_s, burst=burst, cost=cost)


def app_key(app_id: int) -> str:
    """The bucket of one app's requests."""
    return f"app:{app_id}"


@dataclasses.dataclass
class _AppLease:
    tokens: int = 0  # taken from the app's bucket and not spent yet
    spent: int = 0  # by requests since the lease was taken
    ends: float = -math.inf  # time.monotonic() after which its tokens go back instead
    short: bool = False  # the bucket had fewer than the lease asked for: the app is near its limit


class RequestLimit:
    """One web process's share of the per-app request limits: their tokens taken a lease at a time."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = settings.rate_limit_per_s, settings.rate_limit_burst
        self.lease_s = settings.rate_limit_lease_ms / 1000
        self.most = max(1, min(int(self.rate * self.lease_s), self.burst))
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[int, _AppLease] = {}

    def take_held(self, app_id: int) -> bool:
        """Count one request of an app with a token this process holds; False when it holds none now."""
        if self.rate <= 0:
            return True
        with self._lock:
            lease = self._leases.get(app_id)
            if lease is None or lease.tokens <= 0 or self._clock() >= lease.ends:
                return False
            lease.tokens -= 1
            lease.spent += 1
            return True

    def take(self, conn: psycopg.Connection, app_id: int) -> None:
        """Count one request of an app (a held token, or a new lease); RateLimited when its bucket is empty."""
        if self.take_held(app_id):
            return
        with self._lock:
            if len(self._leases) >= _MAX_LEASED_APPS:  # far more apps than a company has; their tokens refill
                self._leases.clear()
            lease = self._leases.setdefault(app_id, _AppLease())
            ran_out_early = lease.tokens <= 0 and self._clock() < lease.ends
            want = 1 if lease.short else min(self.most, max(1, lease.spent * (2 if ran_out_early else 1)))
            returned, lease.tokens, lease.spent = max(lease.tokens, 0), 0, 0
        got = store.lease_rate_limit_tokens(
            conn, key=app_key(app_id), rate_per_s=self.rate, burst=self.burst, want=want, returned=returned
        )
        with self._lock:
            lease.short = got.taken < want
            if got.taken > 0:  # one for this request, the rest held
                lease.tokens += got.taken - 1
                lease.spent += 1
                lease.ends = self._clock() + self.lease_s
        if got.taken <= 0:
            raise self._refusal(got)

    def _refusal(self, lease: Lease) -> errors.RateLimited:
        retry_after = max(1, math.ceil(lease.retry_after_s))
        return errors.RateLimited(
            f"too many requests: this app may make {self.rate:g} a second (bursts of {self.burst}); "
            f"retry in {retry_after} s",
            retry_after_s=retry_after,
            details={"limit_per_s": self.rate, "burst": self.burst, "retry_after_s": retry_after},
        )


_MAX_LEASED_APPS = 10_000


def wait_for_mailjet(
    pool: psycopg_pool.ConnectionPool,
    settings: Settings,
    sleep: Callable[[float], None] = time.sleep,
    deadline: float = math.inf,
) -> bool:
    """Block until the cap on Mailjet calls shared by every worker (MAILER_MAILJET_MAX_CALLS_PER_S) allows one;
    False, without waiting on, once the wait would pass `deadline` (time.monotonic()): no call may start then."""
    if time.monotonic() >= deadline:
        return False
    rate = settings.mailjet_max_calls_per_s
    if rate <= 0:
        return True
    burst = max(1.0, rate)  # one second's worth, and at least one whole call
    while True:
        try:
            with db.autocommit(pool) as conn:
                decision = take(conn, MAILJET_KEY, rate, burst)
        except errors.DatabaseUnavailable:
            # The cap only spares Mailjet a 429 storm (which is retried anyway): better send now
            # than hold claimed jobs while the database blinks.
            log.warning("the Mailjet call cap could not be checked (database unavailable); calling anyway")
            return True
        if decision.granted:
            return time.monotonic() < deadline
        # Jitter, so workers that wait for the same token do not all come back at once.
        pause = decision.retry_after_s * (1 + 0.25 * random.random()) + 0.001  # noqa: S311  # not for security
        if time.monotonic() + pause >= deadline:
            return False
        sleep(pause)
