"""Suppression lists: the addresses an app must not send to, and what sending does about them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class Suppression:
    email: str
    reason: str | None
    source: str
    scope: str
    created_at: dt.datetime


def insert_suppression(
    conn: psycopg.Connection, *, app_id: int, email: str, reason: str | None, source: str, scope: str = "all"
) -> Suppression | None:
    """Add an address (lower-cased) to an app's list; None when it is already there."""
    row = _run.one_row(
        conn, "insert_suppression", app_id=app_id, email=email, reason=reason, source=source, scope=scope
    )
    return Suppression(**row) if row else None


def widen_suppression(conn: psycopg.Connection, *, app_id: int, email: str) -> Suppression | None:
    """Make a bulk-only entry one for all mail; None when there is no bulk-only entry."""
    row = _run.one_row(conn, "widen_suppression", app_id=app_id, email=email)
    return Suppression(**row) if row else None


def enqueue_unsubscribed_webhook(
    conn: psycopg.Connection, *, app_id: int, email: str, job_id: uuid.UUID | None
) -> bool:
    """Queue an `email.unsubscribed` message for the app's webhooks; False when no endpoint takes it."""
    row = _run.one_row(conn, "enqueue_unsubscribed_webhook", app_id=app_id, email=email,
                       job_id=str(job_id) if job_id else None)
    return row is not None


def unsubscribe_recipients(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID, email: str) -> list[int]:
    """Move the job's first To recipient of this address to `unsubscribed` when it is sent and below it; its id."""
    rows = _run.all_rows(conn, "unsubscribe_recipients", app_id=app_id, job_id=job_id, email=email)
    return [int(row["id"]) for row in rows]


def get_suppression(conn: psycopg.Connection, *, app_id: int, email: str) -> Suppression | None:
    """One entry of an app's list (the address matched case-insensitively), or None."""
    row = _run.one_row(conn, "get_suppression", app_id=app_id, email=email)
    return Suppression(**row) if row else None


def delete_suppression(conn: psycopg.Connection, *, app_id: int, email: str) -> bool:
    """Take an address off an app's list; False when it was not there."""
    return _run.one_row(conn, "delete_suppression", app_id=app_id, email=email) is not None


def list_suppressions(
    conn: psycopg.Connection,
    *,
    app_id: int,
    limit: int,
    email: str | None = None,
    after: tuple[dt.datetime, str] | None = None,
) -> list[Suppression]:
    """Up to `limit` entries, newest first (ties by address), after the keyset position `after`."""
    after_created_at, after_email = after if after else (None, None)
    rows = _run.all_rows(
        conn,
        "list_suppressions",
        app_id=app_id,
        limit=limit,
        email=email,
        after_created_at=after_created_at,
        after_email=after_email,
    )
    return [Suppression(**row) for row in rows]


def suppress_from_events(conn: psycopg.Connection, *, event_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Add the addresses of these matched events that suppress; the (app_id, email) pairs added."""
    if not event_ids:
        return []
    return _run.all_rows(conn, "suppress_from_events", event_ids=list(event_ids))


def list_suppressed_recipients(conn: psycopg.Connection, *, job_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """The recipients (job_id, kind, position, email) of these jobs whose address is suppressed."""
    if not job_ids:
        return []
    return _run.all_rows(conn, "list_suppressed_recipients", job_ids=list(job_ids))


def mark_jobs_suppressed(conn: psycopg.Connection, *, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """End sending jobs whose every recipient is suppressed; the ids that changed."""
    if not ids:
        return []
    return [row["job_id"] for row in _run.all_rows(conn, "mark_jobs_suppressed", ids=list(ids))]


def suppress_recipients(conn: psycopg.Connection, *, recipients: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    """Mark recipients (job_id, kind, position) of sending jobs suppressed; the jobs that changed."""
    if not recipients:
        return []
    rows = _run.all_rows(conn, "suppress_recipients", recipients=_run.jsonb(list(recipients)))
    return [row["job_id"] for row in rows]
