"""Pacing of webhook posts: the per-(app, host) rate limit, and deliveries put back unattempted."""

from __future__ import annotations

import logging
import random
import urllib.parse

import psycopg_pool

from mailer import db, metrics
from mailer.config import Settings
from mailer.services import rate_limits, ssrf
from mailer.store import webhooks as store
from mailer.store.webhooks import ClaimedDelivery

log = logging.getLogger("mailer.services.webhook_delivery")

JITTER = 0.2  # each retry delay is stretched or shrunk by up to 20 %
# A delivery whose host name could not be looked up for want of a free resolver thread is due again after
# about this long: not an attempt, not a failure (the name is not at fault).
RESOLVER_BUSY_RETRY_S = 5.0


def host_of(url: str) -> str:
    """The subscriber host a delivery counts against (its rate limit's bucket, with its app)."""
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def host_bucket(delivery: ClaimedDelivery) -> str:
    """The rate limit's bucket: the app and the host, so that one app flooding a shared host (a chat
    service's webhook host) does not push back the other apps' deliveries to it."""
    return f"webhook-host:{delivery.app_id}:{host_of(delivery.url)}"


def postponed(pool: psycopg_pool.ConnectionPool, delivery: ClaimedDelivery, settings: Settings) -> float | None:
    """Take a token of the delivery's host, or put the delivery back until there is one; the wait, if any."""
    # Over MAILER_WEBHOOK_HOST_RATE_PER_S a delivery waits: not an attempt, not a failure.
    rate = settings.webhook_host_rate_per_s
    if rate <= 0:
        return None
    with db.autocommit(pool) as conn:
        decision = rate_limits.take(conn, host_bucket(delivery), rate, max(1.0, rate))
        if decision.granted:
            return None
        # jitter, so that the deliveries waiting for one host do not all come back at once
        wait = decision.retry_after_s * (1 + JITTER * random.random()) + 0.01  # noqa: S311  # not for security
        store.postpone_webhook_delivery(
            conn, delivery_id=delivery.id, message_created_at=delivery.message_created_at, delay_s=wait)
    metrics.webhook_postponed()
    return wait


def put_back(pool: psycopg_pool.ConnectionPool, delivery: ClaimedDelivery, reason: ssrf.ResolverBusy) -> None:
    """No resolver thread was free for the delivery's host name: due again shortly, no attempt counted."""
    wait = RESOLVER_BUSY_RETRY_S * (1 + JITTER * random.random())  # noqa: S311  # not for security
    with db.autocommit(pool) as conn:
        store.postpone_webhook_delivery(
            conn, delivery_id=delivery.id, message_created_at=delivery.message_created_at, delay_s=wait)
    metrics.webhook_resolver_busy()
    log.info("webhook delivery %s put back: %s", delivery.id, reason)
