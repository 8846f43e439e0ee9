"""What the operator's command line reads across apps: a job's app, apps by name, recent jobs, the audit tail."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


def get_job_app(conn: psycopg.Connection, *, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The app (app_id, app name) a job belongs to, or None for an unknown job."""
    return _run.one_row(conn, "get_job_app", id=job_id)


def get_app_by_name(conn: psycopg.Connection, *, name: str) -> dict[str, Any] | None:
    """An app (id, name, revoked_at) by name, revoked or not."""
    return _run.one_row(conn, "get_app_by_name", name=name)


def list_recent_jobs(
    conn: psycopg.Connection, *, limit: int, app_id: int | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """The newest jobs (id, app, status, created_at) of every app or one, newest first (needs custom plans)."""
    return _run.all_rows(conn, "list_recent_jobs", limit=limit, app_id=app_id, status=status)


def get_last_job_event_id(conn: psycopg.Connection) -> int:
    """The highest audit event id so far (0 when there is none)."""
    row = _run.one_row(conn, "get_last_job_event_id")
    return int(row["id"]) if row else 0


def list_job_events_after(conn: psycopg.Connection, *, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` audit events (id, job_id, type, at, app_id, app) after `after_id`, in id order."""
    return _run.all_rows(conn, "list_job_events_after", after_id=after_id, limit=limit)


def list_job_events_by_id(conn: psycopg.Connection, *, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The audit events with these ids that exist (and are visible), in id order."""
    if not ids:
        return []
    return _run.all_rows(conn, "list_job_events_by_id", ids=list(ids))
