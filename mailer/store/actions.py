"""Manual actions on one job: cancel, retry."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from mailer.store import _run


def cancel_job(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID) -> bool:
    """Cancel a scheduled or queued job; False when it is in another state or unknown."""
    return _run.one_row(conn, "cancel_job", id=job_id, app_id=app_id) is not None


def retry_job(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID) -> dict[str, Any] | None:
    """Queue a failed job again; its id and priority, or None when it is not failed or unknown."""
    return _run.one_row(conn, "retry_job", id=job_id, app_id=app_id)


def reschedule_job(
    conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID, send_at: dt.datetime
) -> dict[str, Any] | None:
    """Move a scheduled job; its new status, run_at and priority, or None when it is not scheduled."""
    return _run.one_row(conn, "reschedule_job", id=job_id, app_id=app_id, send_at=send_at)
