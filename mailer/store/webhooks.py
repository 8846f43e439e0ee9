"""Outbound webhooks: endpoints, the outbox's deliveries and their attempts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery leased for one attempt, with what the post needs."""

    id: int
    attempts: int
    message_id: str
    type: str
    body: str
    endpoint_id: uuid.UUID
    url: str
    secret: str = dataclasses.field(repr=False)
    previous_secret: str | None = dataclasses.field(repr=False)
    job_id: str | None = None  # for the log line: the job this delivery tells about
    request_id: str | None = None  # and the request id of the API call that queued that job
    app_id: int | None = None  # the app whose endpoint it is (its per-host rate limit is the app's own)
    message_created_at: dt.datetime | None = None  # the partition key (migration 0029): updates reach one month


def lock_app_webhook_endpoints(
    conn: psycopg.Connection, *, app_id: int, except_id: uuid.UUID | None = None
) -> dict[str, Any] | None:
    """Lock the app's row to the end of the transaction; its endpoint count and the other endpoints' ids and
    URLs (None: revoked)."""
    if _run.one_row(conn, "lock_app_for_webhooks", app_id=app_id) is None:
        return None
    return _run.one_row(conn, "count_app_webhook_endpoints", app_id=app_id, except_id=except_id)


def insert_webhook_endpoint(
    conn: psycopg.Connection, *, app_id: int, url: str, events: Sequence[str], secret: str
) -> dict[str, Any]:
    """Register an endpoint; its row (without the secret)."""
    row = _run.one_row(conn, "insert_webhook_endpoint", app_id=app_id, url=url, events=list(events), secret=secret)
    if row is None:
        raise LookupError("INSERT … RETURNING returned no row")
    return row


def list_webhook_endpoints(conn: psycopg.Connection, *, app_id: int) -> list[dict[str, Any]]:
    """An app's endpoints, oldest first."""
    return _run.all_rows(conn, "list_webhook_endpoints", app_id=app_id)


def get_webhook_endpoint(conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID) -> dict[str, Any] | None:
    """One endpoint of one app, or None."""
    return _run.one_row(conn, "get_webhook_endpoint", id=endpoint_id, app_id=app_id)


def update_webhook_endpoint(
    conn: psycopg.Connection,
    *,
    app_id: int,
    endpoint_id: uuid.UUID,
    url: str | None,
    events: Sequence[str] | None,
    enabled: bool | None,
) -> dict[str, Any] | None:
    """Change the given fields; the endpoint, or None if it is not the app's."""
    return _run.one_row(
        conn, "update_webhook_endpoint", id=endpoint_id, app_id=app_id, url=url,
        events=None if events is None else list(events), enabled=enabled,
    )


def delete_webhook_endpoint(conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID) -> bool:
    """Delete an endpoint; whether it existed."""
    return _run.one_row(conn, "delete_webhook_endpoint", id=endpoint_id, app_id=app_id) is not None


def rotate_webhook_secret(
    conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID, secret: str, overlap_s: float
) -> dict[str, Any] | None:
    """Install a new secret, the old one signing too for `overlap_s`; the endpoint, or None."""
    return _run.one_row(
        conn, "rotate_webhook_secret", id=endpoint_id, app_id=app_id, secret=secret, overlap_s=overlap_s
    )


def claim_webhook_deliveries(
    conn: psycopg.Connection, *, limit: int, per_endpoint: int, per_app: int, lease_s: float
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries (at most `per_endpoint` in flight per endpoint, `per_app` per app)."""
    rows = _run.all_rows(
        conn, "claim_webhook_deliveries", limit=limit, per_endpoint=per_endpoint, per_app=per_app, lease_s=lease_s
    )
    return [ClaimedDelivery(**row) for row in rows]


def expand_webhook_fan_outs(conn: psycopg.Connection, *, max_rows: int) -> int:
    """Write up to `max_rows` deliveries of waiting status changes; how many (0 while another expands)."""
    row = _run.one_row(conn, "expand_webhook_fan_outs", max_rows=max_rows)
    return int(row["written"]) if row else 0


def postpone_webhook_delivery(
    conn: psycopg.Connection, *, delivery_id: int, message_created_at: dt.datetime | None, delay_s: float
) -> bool:
    """Put a claimed delivery back, due in `delay_s`, without an attempt; whether it was still pending."""
    return _run.one_row(conn, "postpone_webhook_delivery", delivery_id=delivery_id,
                        message_created_at=message_created_at, delay_s=delay_s) is not None


def list_webhook_secrets(conn: psycopg.Connection, *, after_id: uuid.UUID | None, limit: int) -> list[dict[str, Any]]:
    """Endpoints' stored secrets, by id, after `after_id`."""
    return _run.all_rows(conn, "list_webhook_secrets", after_id=after_id, limit=limit)


def replace_webhook_secrets(
    conn: psycopg.Connection,
    *,
    endpoint_id: uuid.UUID,
    old: tuple[str, str | None],
    new: tuple[str, str | None],
) -> bool:
    """Store an endpoint's secrets anew unless they changed since `old` was read; whether they were."""
    row = _run.one_row(
        conn, "replace_webhook_secrets", id=endpoint_id, old_secret=old[0], old_previous_secret=old[1],
        secret=new[0], previous_secret=new[1],
    )
    return row is not None


def record_webhook_attempt(
    conn: psycopg.Connection,
    *,
    delivery_id: int,
    message_created_at: dt.datetime | None,
    attempted_at: dt.datetime,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
    status: str,
    retry_in_s: float | None,
) -> str | None:
    """Log an attempt and set the delivery's new status; that status (None if it was deleted)."""
    row = _run.one_row(
        conn, "record_webhook_attempt", delivery_id=delivery_id, message_created_at=message_created_at,
        attempted_at=attempted_at,
        status_code=status_code, latency_ms=latency_ms, error=error, status=status, retry_in_s=retry_in_s,
    )
    return None if row is None else str(row["status"])


def update_webhook_endpoint_health(
    conn: psycopg.Connection, *, endpoint_id: uuid.UUID, succeeded: bool, gone: bool, disable_after_s: float
) -> bool:
    """Record an attempt's outcome on its endpoint; whether the endpoint is (now) disabled."""
    row = _run.one_row(
        conn, "update_webhook_endpoint_health", endpoint_id=endpoint_id, succeeded=succeeded, gone=gone,
        disable_after_s=disable_after_s,
    )
    return bool(row and row["disabled"])


def lock_app_of_webhook_endpoint(conn: psycopg.Connection, *, endpoint_id: uuid.UUID) -> None:
    """Lock the app of an endpoint (waiting for an expansion of its status changes to commit)."""
    _run.all_rows(conn, "lock_app_of_webhook_endpoint", endpoint_id=endpoint_id)


def disable_webhook_deliveries(conn: psycopg.Connection, *, endpoint_id: uuid.UUID) -> int:
    """Stop an endpoint's pending deliveries; how many."""
    return len(_run.all_rows(conn, "disable_webhook_deliveries", endpoint_id=endpoint_id))


def list_webhook_deliveries(
    conn: psycopg.Connection, *, endpoint_id: uuid.UUID, limit: int, before_id: int | None, status: str | None
) -> list[dict[str, Any]]:
    """An endpoint's deliveries, newest first, older than `before_id`."""
    return _run.all_rows(
        conn, "list_webhook_deliveries", endpoint_id=endpoint_id, limit=limit, before_id=before_id, status=status
    )


def list_webhook_attempts(conn: psycopg.Connection, *, delivery_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Every attempt of these deliveries, oldest first."""
    return _run.all_rows(conn, "list_webhook_attempts", delivery_ids=list(delivery_ids))


def get_webhook_delivery(
    conn: psycopg.Connection, *, endpoint_id: uuid.UUID, delivery_id: int
) -> dict[str, Any] | None:
    """One delivery of one endpoint (row-locked), or None."""
    return _run.one_row(conn, "get_webhook_delivery", id=delivery_id, endpoint_id=endpoint_id)


def replay_webhook_delivery(conn: psycopg.Connection, *, endpoint_id: uuid.UUID, delivery_id: int) -> dict[str, Any]:
    """Make a delivery due now with a fresh retry schedule; its new state."""
    row = _run.one_row(conn, "replay_webhook_delivery", id=delivery_id, endpoint_id=endpoint_id)
    if row is None:
        raise LookupError(f"delivery {delivery_id} vanished while locked")
    return row
