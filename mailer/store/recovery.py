"""Finding work that a dead worker left behind."""

from __future__ import annotations

from typing import Any

import psycopg

from mailer.store import _run


def requeue_stalled_jobs(conn: psycopg.Connection, *, stalled_after_s: float) -> list[dict[str, Any]]:
    """Queue again (to be checked with Mailjet first) jobs stuck in sending; id, app_id, priority, request_id."""
    return _run.all_rows(conn, "requeue_stalled_jobs", stalled_after_s=stalled_after_s)


def count_unattended_due_jobs(conn: psycopg.Connection, *, task_name: str, grace_s: float) -> dict[str, int]:
    """Due jobs no pending wake-up covers, by priority."""
    rows = _run.all_rows(conn, "count_unattended_due_jobs", task_name=task_name, grace_s=grace_s)
    return {row["priority"]: row["due"] for row in rows}


def match_late_events(conn: psycopg.Connection, *, window_s: float) -> list[dict[str, Any]]:
    """Match recent unmatched events whose MessageID is now known; their ids and recipient ids."""
    return _run.all_rows(conn, "match_late_events", window_s=window_s)
