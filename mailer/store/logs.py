"""The job log (one app's jobs, newest first, with filters) and the per-day counters of GET /logs and /stats."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class LogFilters:
    """What GET /logs asks for; None means "no such filter". `until` is exclusive."""

    limit: int
    before: tuple[dt.datetime, uuid.UUID] | None = None  # the cursor: (created_at, id) of the last job seen
    status: str | None = None
    recipient: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    metadata: dict[str, Any] | None = None


def logs_query(*, app_id: int, filters: LogFilters) -> tuple[str, dict[str, Any]]:
    """The named query and parameters for one page of the log (exposed for the EXPLAIN test and bench)."""
    before_created_at, before_id = filters.before if filters.before else (None, None)
    params = {
        "app_id": app_id,
        "limit": filters.limit,
        "before_created_at": before_created_at,
        "before_id": before_id,
        "status": filters.status,
        "since": filters.since,
        "until": filters.until,
        "metadata": None if filters.metadata is None else _run.jsonb(filters.metadata),
    }
    if filters.recipient is None:
        return "list_logs", params
    return "list_logs_for_recipient", {**params, "recipient": filters.recipient}


def force_custom_plans(conn: psycopg.Connection) -> None:
    """Plan the rest of this transaction's statements for their actual parameters (needs a transaction)."""
    _run.all_rows(conn, "force_custom_plans")


def list_logs(conn: psycopg.Connection, *, app_id: int, filters: LogFilters) -> list[dict[str, Any]]:
    """Up to `filters.limit` jobs of one app, newest first, after the cursor."""
    name, params = logs_query(app_id=app_id, filters=filters)
    return _run.all_rows(conn, name, **params)


def list_recipients_of_jobs(conn: psycopg.Connection, *, job_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """The recipients (job_id, email, kind, status) of these jobs, each job's in the order given."""
    if not job_ids:
        return []
    return _run.all_rows(conn, "list_recipients_of_jobs", job_ids=list(job_ids))


def get_today_counts(conn: psycopg.Connection, *, app_id: int) -> dict[str, int]:
    """The app's counters for the current UTC day, by kind (kinds with nothing yet are absent)."""
    return {row["kind"]: row["count"] for row in _run.all_rows(conn, "get_today_counts", app_id=app_id)}


def list_daily_counts(conn: psycopg.Connection, *, app_id: int, since: dt.date, until: dt.date) -> list[dict[str, Any]]:
    """The app's counters (day, kind, count) for the UTC days since..until, both included."""
    return _run.all_rows(conn, "list_daily_counts", app_id=app_id, since=since, until=until)


def list_overview_counts(conn: psycopg.Connection, *, since: dt.date, until: dt.date,
                         left_out: Sequence[int]) -> list[dict[str, Any]]:
    """Per app and kind its total and `until`'s; per day and kind the sum over apps but `left_out` (the SQL says)."""
    return _run.all_rows(conn, "list_overview_counts", since=since, until=until, left_out=list(left_out))
