"""Replays by window of an endpoint's webhook messages: recorded by the API, expanded by the worker."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


def count_replay_messages(
    conn: psycopg.Connection, *, app_id: int, since: dt.datetime, until: dt.datetime, statuses: Sequence[str]
) -> int:
    """The app's webhook messages in [since, until) of these statuses."""
    row = _run.one_row(conn, "count_replay_messages", app_id=app_id, since=since, until=until, statuses=list(statuses))
    return int(row["matched"]) if row else 0


def insert_webhook_replay(
    conn: psycopg.Connection, *, endpoint_id: uuid.UUID, app_id: int, since: dt.datetime, until: dt.datetime,
    statuses: Sequence[str], matched: int,
) -> dict[str, Any] | None:
    """Record a replay; None while another of the endpoint's is running."""
    return _run.one_row(
        conn, "insert_webhook_replay", endpoint_id=endpoint_id, app_id=app_id, since=since, until=until,
        statuses=list(statuses), matched=matched,
    )


def get_webhook_replay(conn: psycopg.Connection, *, endpoint_id: uuid.UUID, replay_id: int) -> dict[str, Any] | None:
    """One replay of one endpoint."""
    return _run.one_row(conn, "get_webhook_replay", id=replay_id, endpoint_id=endpoint_id)


def claim_webhook_replay(conn: psycopg.Connection, *, after_id: int) -> dict[str, Any] | None:
    """The next running replay after `after_id` that no other worker holds, locked to the end of the transaction."""
    return _run.one_row(conn, "claim_webhook_replay", after_id=after_id)


def expand_webhook_replay_chunk(conn: psycopg.Connection, *, replay_id: int, max_rows: int) -> dict[str, Any] | None:
    """Deliver the replay's next `max_rows` messages again; expanded, written and finished."""
    return _run.one_row(conn, "expand_webhook_replay_chunk", id=replay_id, max_rows=max_rows)


def cancel_webhook_replay(conn: psycopg.Connection, *, replay_id: int) -> bool:
    """Stop a running replay; whether it was running."""
    return _run.one_row(conn, "cancel_webhook_replay", id=replay_id) is not None


def count_running_webhook_replays(conn: psycopg.Connection) -> int:
    """Replays not finished yet."""
    row = _run.one_row(conn, "count_running_webhook_replays")
    return int(row["running"]) if row else 0


def list_webhook_replays(
    conn: psycopg.Connection, *, app_id: int, endpoint_id: uuid.UUID, limit: int
) -> list[dict[str, Any]]:
    """The latest `limit` replays of one of the app's endpoints, newest first."""
    return _run.all_rows(conn, "list_webhook_replays", app_id=app_id, endpoint_id=endpoint_id, limit=limit)
