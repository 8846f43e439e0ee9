"""Outbound webhook endpoints: register, change, rotate secrets, list deliveries, replay; signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.config import Settings
from mailer.domain import errors
from mailer.domain.timefmt import rfc3339
from mailer.domain.webhooks import comparable_url
from mailer.services import ssrf, webhook_secrets
from mailer.store import webhooks as store

SECRET_PREFIX = "whsec_"  # noqa: S105  # the prefix Standard Webhooks gives secrets, not a secret
SECRET_BYTES = 32  # Standard Webhooks: between 24 and 64 bytes
# After a rotation the old secret signs too for this long, so subscribers can switch without a gap.
ROTATION_OVERLAP_S = 24 * 3600
MAX_BIGINT = 2**63 - 1


def new_secret() -> str:
    """A fresh signing secret: whsec_ + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(live_secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: one signature per live secret, space-separated (newest first)."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in live_secrets)


def _check_url(url: str, settings: Settings, app_id: int) -> str:
    """The URL's form, port and addresses now (the lookup bounded by MAILER_WEBHOOK_DNS_TIMEOUT_S): 422.

    The URL to store: as sent, but for its scheme in lower case (`HTTPS://` is valid, the table wants `https`)."""
    try:
        ssrf.check_url(url, settings.webhook_allow_private, settings.webhook_dns_timeout_s, app_id,
                       settings.webhook_dns_threads)
    except ssrf.UnsafeURL as exc:
        raise errors.ValidationFailed(f"url {exc}", {"url": [str(exc)]}) from None
    except ssrf.ResolverBusy as exc:  # not the URL's fault: try again shortly
        raise errors.RateLimited(f"the url's host name cannot be checked now: {exc}; try again shortly",
                                 retry_after_s=2, details={"url": [str(exc)]}) from None
    scheme, rest = url.split(":", 1)
    return f"{scheme.lower()}:{rest}"


def _lock_app(
    conn: psycopg.Connection,
    settings: Settings,
    app_id: int,
    url: str,
    endpoint_id: uuid.UUID | None = None,
    check_url: bool = True,
) -> None:
    """Lock the app's endpoints for this transaction; 409 when another of its endpoints has `url`, and
    422 when a new one would pass MAILER_WEBHOOK_MAX_ENDPOINTS."""
    found = store.lock_app_webhook_endpoints(conn, app_id=app_id, except_id=endpoint_id)
    if found is None:  # revoked since the request was authenticated
        raise errors.Unauthorized("invalid or revoked API key")
    wanted = comparable_url(url)
    others = zip(found["other_ids"], found["other_urls"], strict=True)
    same = next((other for other, other_url in others if comparable_url(other_url) == wanted), None)
    if check_url and same is not None:
        raise errors.Conflict(
            f"webhook {same} of this app already has this URL; one endpoint per URL",
            {"url": ["another endpoint of this app has this URL"], "webhook_id": str(same)},
        )
    limit = settings.webhook_max_endpoints
    if endpoint_id is None and found["endpoints"] >= limit:
        raise errors.ValidationFailed(
            f"an app may have at most {limit} webhook endpoints (MAILER_WEBHOOK_MAX_ENDPOINTS); "
            "delete one before adding another",
            {"webhooks": [f"at most {limit} endpoints per app"], "limit": limit},
        )


def _endpoint(row: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "enabled": row["disabled_at"] is None,
        "disabled_at": rfc3339(row["disabled_at"]),
        "disabled_reason": row["disabled_reason"],
        "previous_secret_expires_at": rfc3339(row["previous_secret_expires_at"]),
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
    }
    if secret is not None:
        shown["secret"] = secret
    return shown


def create(conn: psycopg.Connection, *, app_id: int, url: str, events: Sequence[str], settings: Settings) -> dict:
    """Register an endpoint; the answer carries its secret, shown this once (stored encrypted)."""
    url = _check_url(url, settings, app_id)
    keys = webhook_secrets.cipher(conn, settings)
    _lock_app(conn, settings, app_id, url)
    secret = new_secret()
    row = store.insert_webhook_endpoint(
        conn, app_id=app_id, url=url, events=_dedupe(events), secret=webhook_secrets.encrypt(keys, secret)
    )
    return _endpoint(row, secret)


def list_endpoints(conn: psycopg.Connection, *, app_id: int) -> list[dict[str, Any]]:
    """An app's endpoints (never their secrets)."""
    return [_endpoint(row) for row in store.list_webhook_endpoints(conn, app_id=app_id)]


def get(conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID) -> dict[str, Any]:
    """One endpoint; NotFound for another app's."""
    return _endpoint(_require(conn, app_id, endpoint_id))


def update(
    conn: psycopg.Connection,
    *,
    app_id: int,
    endpoint_id: uuid.UUID,
    url: str | None,
    events: Sequence[str] | None,
    enabled: bool | None,
    settings: Settings,
) -> dict[str, Any]:
    """Change url, events or enabled; disabling stops the pending deliveries; 409 for another's URL."""
    if url is not None:
        url = _check_url(url, settings, app_id)
    current = _require(conn, app_id, endpoint_id)
    # Only a new URL or enabling can make a duplicate (an older installation may hold disabled ones).
    _lock_app(conn, settings, app_id, url or current["url"], endpoint_id, check_url=url is not None or bool(enabled))
    row = store.update_webhook_endpoint(
        conn, app_id=app_id, endpoint_id=endpoint_id, url=url,
        events=None if events is None else _dedupe(events), enabled=enabled,
    )
    if row is None:
        raise errors.NotFound(f"no webhook {endpoint_id}")
    if row["disabled_at"] is not None:
        store.disable_webhook_deliveries(conn, endpoint_id=endpoint_id)
    return _endpoint(row)


def delete(conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID) -> None:
    """Delete an endpoint and its deliveries."""
    if not store.delete_webhook_endpoint(conn, app_id=app_id, endpoint_id=endpoint_id):
        raise errors.NotFound(f"no webhook {endpoint_id}")


def rotate_secret(
    conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID, settings: Settings
) -> dict[str, Any]:
    """A new secret (shown this once, stored encrypted); the current one keeps signing for 24 h."""
    secret = new_secret()
    row = store.rotate_webhook_secret(
        conn, app_id=app_id, endpoint_id=endpoint_id, overlap_s=ROTATION_OVERLAP_S,
        secret=webhook_secrets.encrypt(webhook_secrets.cipher(conn, settings), secret),
    )
    if row is None:
        raise errors.NotFound(f"no webhook {endpoint_id}")
    return _endpoint(row, secret)


def list_deliveries(
    conn: psycopg.Connection,
    *,
    app_id: int,
    endpoint_id: uuid.UUID,
    limit: int,
    cursor: int | None,
    status: str | None,
) -> dict[str, Any]:
    """An endpoint's deliveries, newest first, each with every attempt; keyset pagination."""
    _require(conn, app_id, endpoint_id)
    rows = store.list_webhook_deliveries(
        conn, endpoint_id=endpoint_id, limit=limit + 1, before_id=cursor, status=status
    )
    page, more = rows[:limit], len(rows) > limit
    attempts: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in page}
    for attempt in store.list_webhook_attempts(conn, delivery_ids=list(attempts)):
        attempts[attempt["delivery_id"]].append({
            "at": rfc3339(attempt["attempted_at"]),
            "status_code": attempt["status_code"],
            "latency_ms": attempt["latency_ms"],
            "error": attempt["error"],
        })
    return {
        "items": [_delivery(row, attempts[row["id"]]) for row in page],
        "next_cursor": str(page[-1]["id"]) if more else None,
    }


def _delivery(row: dict[str, Any], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    pending = row["status"] == "pending"
    return {
        "id": row["id"],
        "webhook_id": row["message_id"],
        "type": row["type"],
        "status": row["status"],
        "in_flight": pending and row["in_flight"],
        "next_attempt_at": rfc3339(row["next_attempt_at"]) if pending else None,
        "created_at": rfc3339(row["created_at"]),
        "last_attempt_at": rfc3339(row["last_attempt_at"]),
        "replay_id": row["replay_id"],
        "attempts": attempts,
    }


def replay(conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID, delivery_id: int) -> dict[str, Any]:
    """Send a delivery again now (same webhook-id and body); 409 while disabled or in flight."""
    endpoint = _require(conn, app_id, endpoint_id)
    delivery = None
    if 0 < delivery_id <= MAX_BIGINT:
        delivery = store.get_webhook_delivery(conn, endpoint_id=endpoint_id, delivery_id=delivery_id)
    if delivery is None:
        raise errors.NotFound(f"no delivery {delivery_id} of webhook {endpoint_id}")
    if endpoint["disabled_at"] is not None:
        raise errors.Conflict("the webhook is disabled; enable it (PATCH enabled=true) before a replay")
    if delivery["in_flight"]:
        raise errors.Conflict("the delivery is being attempted right now")
    row = store.replay_webhook_delivery(conn, endpoint_id=endpoint_id, delivery_id=delivery_id)
    return {"id": row["id"], "status": row["status"], "next_attempt_at": rfc3339(row["next_attempt_at"])}


def _require(conn: psycopg.Connection, app_id: int, endpoint_id: uuid.UUID) -> dict[str, Any]:
    row = store.get_webhook_endpoint(conn, app_id=app_id, endpoint_id=endpoint_id)
    if row is None:
        raise errors.NotFound(f"no webhook {endpoint_id}")
    return row


def _dedupe(events: Sequence[str]) -> list[str]:
    """The event names in their first order, each once."""
    return list(dict.fromkeys(events))
