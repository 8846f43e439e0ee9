"""The senders' wake-ups: Procrastinate send jobs, deferred from SQL (sql/migrations/0009)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import psycopg

from mailer.store import _run


def wake_senders(
    conn: psycopg.Connection, *, lanes: Sequence[int], wake_ats: Sequence[dt.datetime | None], target: dict[str, object]
) -> int:
    """Defer one send job per batch of due email of a lane and wake-up time; how many were deferred."""
    row = _run.one_row(conn, "wake_senders", lanes=list(lanes), wake_ats=list(wake_ats), **target)
    return int(row["deferred"]) if row else 0


def await_wakers(conn: psycopg.Connection) -> None:
    """Wait until the requests that counted on a running wake-up have ended; LockNotAvailable after 500 ms."""
    _run.one_row(conn, "await_wakers")
