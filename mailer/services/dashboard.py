"""What the operator dashboard needs beyond the API's use cases: who is looking, and every app at once."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from mailer import store
from mailer.domain import errors
from mailer.services import logs


def app_of_key_id(conn: psycopg.Connection, *, key_id: str) -> int | None:
    """The active app whose current key has this id (a dashboard session ends with a revoke or rotate)."""
    credentials = store.get_app_by_key_id(conn, key_id=key_id)
    return None if credentials is None else credentials.id


def apps_overview(conn: psycopg.Connection, *, today: dt.date) -> list[dict[str, Any]]:
    """Every app (revoked ones too) with today's counters, for the operator."""
    overview = []
    for app in store.list_apps(conn):
        counts = logs.daily_stats(conn, app_id=app.id, since=today, until=today)["days"][0]
        overview.append({"id": app.id, "name": app.name, "active": app.revoked_at is None, "today": counts})
    return overview


def app_name(conn: psycopg.Connection, *, app_id: int) -> str:
    """An app's name; NotFound when there is no such app."""
    for app in store.list_apps(conn):  # a handful of internal apps: no query of its own needed
        if app.id == app_id:
            return app.name
    raise errors.NotFound(f"no app {app_id}")


def job_request_id(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID) -> str | None:
    """The request id of the API call that queued a job (None for jobs a schedule made)."""
    job = store.get_job(conn, app_id=app_id, job_id=job_id)
    if job is None:
        raise errors.NotFound(f"no job {job_id}")
    return job.get("request_id")
