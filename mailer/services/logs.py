"""GET /logs (an app's jobs, newest first, a page at a time) and GET /stats (its counters per day)."""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

import psycopg

from mailer import store
from mailer.domain import engagement
from mailer.services import status

TODAY_KINDS = ("created", "sent", "failed")
STATS_DEFAULT_DAYS = 14
STATS_MAX_DAYS = 366
MAX_CURSOR_LENGTH = 200
_CURSOR = re.compile(r"\A[A-Za-z0-9_-]+\Z")


def encode_cursor(created_at: dt.datetime, job_id: uuid.UUID) -> str:
    """An opaque cursor for the position just after this job (base64url of a little JSON)."""
    raw = json.dumps({"t": created_at.isoformat(), "id": str(job_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """The (created_at, id) a cursor stands for; ValueError when it is not one of ours."""
    if len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR.match(cursor):
        raise ValueError("not a cursor")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not a cursor") from None
    if not isinstance(data, dict) or set(data) != {"t", "id"} or not all(isinstance(v, str) for v in data.values()):
        raise ValueError("not a cursor")
    created_at = dt.datetime.fromisoformat(data["t"])  # ValueError when it is not a time
    if created_at.tzinfo is None:
        raise ValueError("not a cursor")
    return created_at, uuid.UUID(data["id"])


def log_page(
    conn: psycopg.Connection,
    *,
    app_id: int,
    limit: int,
    before: tuple[dt.datetime, uuid.UUID] | None = None,
    status: str | None = None,
    recipient: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One page of the app's jobs (newest first), the cursor of the next one, and today's counters.

    `before` is a decoded cursor; `until` is exclusive; `metadata` matches by JSON containment.
    """
    # One row more than asked tells whether there is a next page, without a count.
    filters = store.LogFilters(
        limit=limit + 1, before=before, status=status, recipient=recipient, since=since, until=until, metadata=metadata
    )
    with conn.transaction():
        # The log queries rely on custom plans (see sql/queries/logs.sql); SET LOCAL needs this transaction.
        store.force_custom_plans(conn)
        rows = store.list_logs(conn, app_id=app_id, filters=filters)
        page = rows[:limit]
        recipients: dict[uuid.UUID, list[dict[str, Any]]] = collections.defaultdict(list)
        for address in store.list_recipients_of_jobs(conn, job_ids=[row["id"] for row in page]):
            recipients[address["job_id"]].append(
                {"email": address["email"], "kind": address["kind"], "status": address["status"]}
            )
        today = store.get_today_counts(conn, app_id=app_id)
    last = page[-1] if len(rows) > limit else None
    return {
        "items": [_item(row, recipients[row["id"]]) for row in page],
        "next_cursor": None if last is None else encode_cursor(last["created_at"], last["id"]),
        "today": {kind: today.get(kind, 0) for kind in TODAY_KINDS},
    }


def _item(job: dict[str, Any], recipients: list[dict[str, Any]]) -> dict[str, Any]:
    return {**status.job_summary(job), "recipients": recipients}


def daily_stats(conn: psycopg.Connection, *, app_id: int, since: dt.date, until: dt.date) -> dict[str, Any]:
    """The app's counters for every UTC day since..until (both included, zeros too), oldest first, and totals."""
    return stats_of_days(store.list_daily_counts(conn, app_id=app_id, since=since, until=until), since, until)


def stats_of_days(rows: Iterable[dict[str, Any]], since: dt.date, until: dt.date) -> dict[str, Any]:
    """`days` (every day of the range, with its rates) and `totals` from counter rows (day, kind, count)."""
    counts: dict[dt.date, dict[str, int]] = collections.defaultdict(dict)
    for row in rows:
        counts[row["day"]][row["kind"]] = counts[row["day"]].get(row["kind"], 0) + row["count"]
    days = []
    for offset in range((until - since).days + 1):
        day = since + dt.timedelta(days=offset)
        days.append(engagement.day_entry(day.isoformat(), counts[day]))
    return {"days": days, "totals": engagement.totals(days)}
