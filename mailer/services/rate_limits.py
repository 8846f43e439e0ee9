"""Rate limits whose state lives in Postgres, so they hold across processes and machines.

Each limit is a token bucket (one row of rate_limit_buckets): it holds at most `burst` tokens, gains
`rate_per_s` tokens a second, and every request or call takes one. A take is one statement; run it on its
own (db.autocommit), never inside a request's main transaction, which would hold its row lock to the end.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

import psycopg
import psycopg_pool

from mailer import db, store
from mailer.config import Settings
from mailer.domain import errors
from mailer.store.rate_limits import Decision

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


def limit_app_request(conn: psycopg.Connection, settings: Settings, app_id: int) -> None:
    """Count one request of an app; RateLimited when it is over MAILER_RATE_LIMIT_PER_S/_BURST."""
    rate, burst = settings.rate_limit_per_s, settings.rate_limit_burst
    decision = take(conn, app_key(app_id), rate, burst)
    if decision.granted:
        return
    retry_after = max(1, math.ceil(decision.retry_after_s))
    raise errors.RateLimited(
        f"too many requests: this app may make {rate:g} a second (bursts of {burst}); retry in {retry_after} s",
        retry_after_s=retry_after,
        details={"limit_per_s": rate, "burst": burst, "retry_after_s": retry_after},
    )


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
