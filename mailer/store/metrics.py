"""The gauges of GET /metrics that are read from Postgres at scrape time."""

from __future__ import annotations

from typing import Any

import psycopg

from mailer.store import _run


def count_waiting_jobs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Scheduled, queued and sending jobs by status and priority: jobs, due, oldest_due_s."""
    return _run.all_rows(conn, "count_waiting_jobs")


def count_pending_webhook_deliveries(conn: psycopg.Connection) -> int:
    """Webhook deliveries still to be made."""
    row = _run.one_row(conn, "count_pending_webhook_deliveries")
    return int(row["pending"]) if row else 0


def limit_metrics_statement_time(conn: psycopg.Connection, *, timeout_ms: int) -> None:
    """Cap every statement of the open transaction at `timeout_ms`."""
    _run.all_rows(conn, "limit_metrics_statement_time", timeout_ms=timeout_ms)


def oldest_transaction(conn: psycopg.Connection) -> dict[str, Any]:
    """The oldest open transaction of the database, other than this one: oldest_transaction_s, oldest_snapshot_xids;
    and oldest_writer_s, the oldest holding a transaction id on the server."""
    return _run.one_row(conn, "oldest_transaction") or {"oldest_transaction_s": 0.0, "oldest_snapshot_xids": 0,
                                                        "oldest_writer_s": 0.0}
