"""Recurring schedules and the occurrences they produced."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from mailer.store import _run


def _with_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "message": _run.jsonb(row["message"]), "metadata": _run.jsonb(row["metadata"])}


def insert_schedule(conn: psycopg.Connection, *, schedule: dict[str, Any]) -> dict[str, Any] | None:
    """Store a new active schedule; None when its app is revoked."""
    return _run.one_row(conn, "insert_schedule", **_with_json(schedule))


def get_schedule(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> dict[str, Any] | None:
    """One schedule of one app."""
    return _run.one_row(conn, "get_schedule", id=schedule_id, app_id=app_id)


def lock_active_schedule(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> dict[str, Any] | None:
    """An active schedule, locked for this transaction."""
    return _run.one_row(conn, "lock_active_schedule", id=schedule_id, app_id=app_id)


def list_schedules(
    conn: psycopg.Connection, *, app_id: int, state: str | None, after: tuple[dt.datetime, uuid.UUID] | None, limit: int
) -> list[dict[str, Any]]:
    """A page of an app's schedules, newest first."""
    return _run.all_rows(
        conn, "list_schedules", app_id=app_id, state=state, limit=limit,
        after_created_at=after[0] if after else None, after_id=after[1] if after else None,
    )


def update_schedule(conn: psycopg.Connection, *, schedule: dict[str, Any]) -> bool:
    """Change an active schedule's message and rule."""
    return _run.one_row(conn, "update_schedule", **_with_json(schedule)) is not None


def advance_schedule(conn: psycopg.Connection, *, schedule_id: uuid.UUID, next_occurrence: dt.datetime) -> None:
    """Set an active schedule's next occurrence."""
    _run.all_rows(conn, "advance_schedule", id=schedule_id, next_occurrence=next_occurrence)


def finish_schedule(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> bool:
    """Mark an active schedule done; False when it was not active."""
    return _run.one_row(conn, "finish_schedule", id=schedule_id, app_id=app_id) is not None


def delete_schedule(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> bool:
    """Delete a schedule; False when unknown."""
    return _run.one_row(conn, "delete_schedule", id=schedule_id, app_id=app_id) is not None


def finish_due_schedules_of_revoked_apps(conn: psycopg.Connection, *, horizon: dt.datetime, limit: int) -> int:
    """Mark done up to `limit` due schedules of revoked apps that no scheduler holds; how many."""
    return len(_run.all_rows(conn, "finish_due_schedules_of_revoked_apps", horizon=horizon, limit=limit))


def claim_due_schedules(conn: psycopg.Connection, *, horizon: dt.datetime, limit: int) -> list[dict[str, Any]]:
    """Lock active schedules of active apps with an occurrence before `horizon` that no other scheduler holds."""
    return _run.all_rows(conn, "claim_due_schedules", horizon=horizon, limit=limit)


def claim_occurrence(
    conn: psycopg.Connection, *, schedule_id: uuid.UUID, occurs_at: dt.datetime, job_id: uuid.UUID | None
) -> bool:
    """Reserve an occurrence (for a job, or as skipped when job_id is None); False if already taken."""
    row = _run.one_row(conn, "claim_occurrence", schedule_id=schedule_id, occurs_at=occurs_at, job_id=job_id)
    return row is not None


def list_schedule_jobs(conn: psycopg.Connection, *, schedule_id: uuid.UUID) -> list[uuid.UUID]:
    """Ids of the jobs a schedule produced, in occurrence order."""
    return [row["job_id"] for row in _run.all_rows(conn, "list_schedule_jobs", schedule_id=schedule_id)]


def cancel_scheduled_jobs_of_schedule(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> int:
    """Cancel a schedule's jobs that still wait for their time; how many."""
    return len(_run.all_rows(conn, "cancel_scheduled_jobs_of_schedule", app_id=app_id, schedule_id=schedule_id))
