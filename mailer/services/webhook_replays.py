"""Replay by window: record a replay of an endpoint's webhook messages, then expand it into deliveries in the
background, a bounded chunk per transaction, never more than a bounded number waiting unattempted."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool

from mailer import db, metrics
from mailer.config import Settings
from mailer.domain import errors
from mailer.domain.timefmt import rfc3339
from mailer.domain.webhooks import ALL_EVENTS, EVENT_NAMES
from mailer.store import webhook_replays as store
from mailer.store import webhooks as endpoints_store

TYPE_PREFIX = "email."
# One expansion round tops up running replays for at most this long (it runs before each webhook dispatch).
EXPAND_BUDGET_S = 0.5
# A window cut to the request's time keeps since < until (the table's check) when since is that very instant.
_EPSILON = dt.timedelta(microseconds=1)


def start(
    conn: psycopg.Connection,
    *,
    app_id: int,
    endpoint_id: uuid.UUID,
    since: dt.datetime,
    until: dt.datetime,
    types: Sequence[str] | None,
    settings: Settings,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Record a replay of [since, until) for the endpoint (its subscribed statuses, narrowed by `types`); the
    number of messages it queues. 404 for another app's endpoint, 409 when disabled or one is running."""
    now = now or dt.datetime.now(dt.UTC)
    _check_window(since, until, now, settings)
    endpoint = endpoints_store.get_webhook_endpoint(conn, app_id=app_id, endpoint_id=endpoint_id)
    if endpoint is None:
        raise errors.NotFound(f"no webhook {endpoint_id}")
    if endpoint["disabled_at"] is not None:
        raise errors.Conflict("the webhook is disabled; enable it (PATCH enabled=true) before a replay")
    statuses = subscribed(endpoint["events"], types)
    until = min(until, now)  # nothing newer exists yet; a later message is delivered live anyway
    matched = 0
    if statuses and since < until:
        matched = store.count_replay_messages(conn, app_id=app_id, since=since, until=until, statuses=statuses)
    row = store.insert_webhook_replay(
        conn, endpoint_id=endpoint_id, app_id=app_id, since=since, until=max(until, since + _EPSILON),
        statuses=statuses, matched=matched,
    )
    if row is None:
        raise errors.Conflict("a replay of this webhook is still running; wait until it is done")
    return answer(row)


def _check_window(since: dt.datetime, until: dt.datetime, now: dt.datetime, settings: Settings) -> None:
    if since >= until:
        raise errors.ValidationFailed("the window is empty", {"until": ["must be later than since"]})
    if since > now:
        raise errors.ValidationFailed("the window is in the future", {"since": ["must not be in the future"]})
    longest = dt.timedelta(days=settings.webhook_replay_max_days)
    if until - since > longest:
        raise errors.ValidationFailed(
            "the window is too long",
            {"since": [f"the window may span at most {settings.webhook_replay_max_days} days "
                       "(MAILER_WEBHOOK_REPLAY_MAX_DAYS)"]},
        )


def subscribed(events: Sequence[str], types: Sequence[str] | None) -> list[str]:
    """The statuses an endpoint subscribes to, narrowed to `types` (statuses) when given."""
    wanted = list(EVENT_NAMES) if ALL_EVENTS in events else [name for name in EVENT_NAMES if name in events]
    return wanted if types is None else [name for name in wanted if name in types]


def get(conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID, replay_id: int) -> dict[str, Any]:
    """One replay of one of the app's endpoints, with its progress."""
    if endpoints_store.get_webhook_endpoint(conn, app_id=app_id, endpoint_id=endpoint_id) is None:
        raise errors.NotFound(f"no webhook {endpoint_id}")
    row = store.get_webhook_replay(conn, endpoint_id=endpoint_id, replay_id=replay_id) \
        if 0 < replay_id < 2**63 else None
    if row is None:
        raise errors.NotFound(f"no replay {replay_id} of webhook {endpoint_id}")
    return answer(row)


def recent(conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    """The latest replays of one of the app's endpoints, newest first, as the API shows each."""
    rows = store.list_webhook_replays(conn, app_id=app_id, endpoint_id=endpoint_id, limit=limit)
    return [answer(row) for row in rows]


def answer(row: dict[str, Any]) -> dict[str, Any]:
    """A replay as the API shows it."""
    return {
        "id": row["id"],
        "queued": row["matched"],
        "expanded": row["queued"],
        "status": row["outcome"] or "running",
        "since": rfc3339(row["since"]),
        "until": rfc3339(row["until"]),
        "types": [TYPE_PREFIX + status for status in row["statuses"]],
        "created_at": rfc3339(row["created_at"]),
        "finished_at": rfc3339(row["finished_at"]),
    }


def expand(pool: psycopg_pool.ConnectionPool, settings: Settings, budget_s: float = EXPAND_BUDGET_S) -> int:
    """Top up every running replay to MAILER_WEBHOOK_REPLAY_IN_FLIGHT deliveries waiting unattempted, a chunk
    per transaction; how many messages were queued."""
    deadline, after_id, total = time.monotonic() + budget_s, 0, 0
    while time.monotonic() < deadline:
        with db.connection(pool) as conn:  # one transaction: the chunk and its position
            replay = store.claim_webhook_replay(conn, after_id=after_id)
            if replay is None:
                break
            after_id = replay["id"]
            if replay["stopped"]:
                store.cancel_webhook_replay(conn, replay_id=replay["id"])
                continue
            room = min(settings.webhook_replay_in_flight - int(replay["waiting"]), settings.webhook_expand_batch)
            if room <= 0:
                continue
            done = store.expand_webhook_replay_chunk(conn, replay_id=replay["id"], max_rows=room)
        expanded = int(done["expanded"]) if done else 0
        total += expanded
        if expanded:
            metrics.webhook_replay_queued(expanded)
    return total
