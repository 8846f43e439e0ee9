"""One-click unsubscribe (RFC 8058): the signed links bulk mail carries, and what following one does.

A token is a Fernet token (AES-128-CBC encrypted, HMAC-SHA256 signed) of the app id, the job id and the
recipient's address, keyed by the installation key "unsubscribe": it names the app and the recipient, reveals
no address, and any change to it fails the signature. It is URL-safe base64 without padding, at most
MAX_TOKEN characters. Mailjet sends one header set per message, so the token names the message's first To
recipient as sent (README: "Unsubscribe").
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
import struct
import uuid
from typing import Any

import psycopg
from cryptography.fernet import Fernet, InvalidToken

from mailer import metrics, store
from mailer.config import Settings
from mailer.domain import errors
from mailer.services import rate_limits, suppressions
from mailer.services.instance_keys import instance_key
from mailer.store.jobs import ClaimedJob

log = logging.getLogger(__name__)

KEY_NAME = "unsubscribe"
SOURCE = "unsubscribe"
MAX_EMAIL_BYTES = 320
MAX_TOKEN = 700  # a 320-byte address makes a token of about 550 characters
LIST_UNSUBSCRIBE = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe-Post"
ONE_CLICK = "List-Unsubscribe=One-Click"
_HEAD = struct.Struct(">q16s")  # app id, job id

_fernets: dict[bytes, Fernet] = {}


def fernet(conn: psycopg.Connection) -> Fernet:
    """The installation's token key (read once per process)."""
    key = instance_key(conn, KEY_NAME)
    if key not in _fernets:
        _fernets[key] = Fernet(base64.urlsafe_b64encode(key))
    return _fernets[key]


def make_token(box: Fernet, *, app_id: int, job_id: uuid.UUID, email: str) -> str:
    """A token naming the app, the job and the recipient (lower-cased)."""
    address = email.lower().encode("utf-8")[:MAX_EMAIL_BYTES]
    return box.encrypt(_HEAD.pack(app_id, job_id.bytes) + address).decode("ascii").rstrip("=")


def read_token(box: Fernet, token: str) -> tuple[int, uuid.UUID, str]:
    """The (app id, job id, address) of a token; NotFound for anything this installation did not sign."""
    try:
        if not 0 < len(token) <= MAX_TOKEN or not token.isascii():
            raise ValueError("not a token")
        plain = box.decrypt((token + "=" * (-len(token) % 4)).encode("ascii"))
        app_id, job_bytes = _HEAD.unpack_from(plain)
        email = plain[_HEAD.size:].decode("utf-8")
        if not email:
            raise ValueError("no address")
    except (InvalidToken, ValueError, struct.error):  # UnicodeDecodeError is a ValueError
        raise errors.NotFound("this unsubscribe link is not valid") from None
    return app_id, uuid.UUID(bytes=job_bytes), email


def with_headers(job: ClaimedJob, box: Fernet, public_url: str) -> ClaimedJob:
    """The job with its one-click unsubscribe headers, for its first To recipient; an app's own
    List-Unsubscribe URIs follow ours in the same header (RFC 2369 allows a list)."""
    to = job.message.get("to") or []
    if not to:
        return job
    token = make_token(box, app_id=job.app_id, job_id=job.id, email=to[0]["email"])
    ours = f"<{public_url}/unsubscribe/{token}>"
    headers: dict[str, Any] = {}
    theirs = None
    for name, value in (job.message.get("headers") or {}).items():
        if name.lower() == LIST_UNSUBSCRIBE.lower():
            theirs = value
        elif name.lower() != LIST_UNSUBSCRIBE_POST.lower():
            headers[name] = value
    headers[LIST_UNSUBSCRIBE] = f"{ours}, {theirs}" if theirs else ours
    headers[LIST_UNSUBSCRIBE_POST] = ONE_CLICK
    return dataclasses.replace(job, message={**job.message, "headers": headers})


def address_of(conn: psycopg.Connection, token: str) -> str:
    """The address a token names (for the confirmation page); NotFound for a bad token."""
    _, _, email = read_token(fernet(conn), token)
    return email


def unsubscribe(conn: psycopg.Connection, token: str) -> dict[str, Any]:
    """Suppress the token's address for its app's bulk mail and move its recipient to `unsubscribed`; idempotent:
    `email.unsubscribed` fires once per recipient moved (the triggers on recipients) or, with none to move (gone by
    retention, not sent yet, or already at or past unsubscribed), by hand when the entry is new."""
    try:
        app_id, job_id, email = read_token(fernet(conn), token)
    except errors.NotFound:
        metrics.unsubscribe("bad_token")
        raise
    with conn.transaction():
        # Recipients first, then the list: the order mailer_record_events locks them in (no deadlock).
        moved = store.unsubscribe_recipients(conn, app_id=app_id, job_id=job_id, email=email)
        added = store.insert_suppression(
            conn, app_id=app_id, email=email, reason="one-click unsubscribe", source=SOURCE, scope=suppressions.BULK
        )
        if added is not None and not moved:
            store.enqueue_unsubscribed_webhook(conn, app_id=app_id, email=email, job_id=job_id)
        entry = added or store.get_suppression(conn, app_id=app_id, email=email)
    metrics.unsubscribe("added" if added is not None else "already")
    # An entry of scope `all` (a bounce, or the app's own) stays as it is: it already covers bulk mail.
    return {"email": email, "scope": entry.scope if entry else suppressions.BULK, "unsubscribed": True}


BUCKETS = "unsubscribe:"  # the prefix of the rate-limit buckets of POST /unsubscribe


def limit(conn: psycopg.Connection, settings: Settings, address: str) -> None:
    """Count one POST /unsubscribe from `address`; RateLimited when that address, or everyone, posted too often."""
    limits = (
        (BUCKETS + address, settings.unsubscribes_per_address_per_min, "from your address"),
        (BUCKETS + "*", settings.unsubscribes_per_min, "in all"),
    )
    for key, per_min, whose in limits:
        decision = rate_limits.take(conn, key, per_min / 60, max(1.0, per_min))
        if not decision.granted:
            retry_after = max(1, math.ceil(decision.retry_after_s))
            raise errors.RateLimited(
                f"too many unsubscribe requests {whose}; retry in {retry_after} s",
                retry_after_s=retry_after, details={"limit_per_min": per_min, "retry_after_s": retry_after},
            )
    # A bucket left alone until it is full again is the same as no row: keep rows of recent addresses only.
    refill_s = max((60 * max(1.0, per_min) / per_min for _, per_min, _ in limits if per_min > 0), default=0.0)
    if refill_s:
        store.delete_idle_rate_limit_buckets(conn, prefix=BUCKETS, idle_s=refill_s)


def warn_if_no_public_url(settings: Settings) -> None:
    """Say at start that bulk mail goes without unsubscribe headers while MAILER_PUBLIC_URL is unset."""
    if settings.public_url is None:
        log.warning("MAILER_PUBLIC_URL is not set: bulk mail goes without List-Unsubscribe headers")
    elif not settings.public_url.startswith("https://"):
        log.warning("MAILER_PUBLIC_URL is not https: Gmail and Yahoo ignore one-click unsubscribe links over http")
