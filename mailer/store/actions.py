"""Manual actions on one job: cancel, retry."""

from __future__ import annotations

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
