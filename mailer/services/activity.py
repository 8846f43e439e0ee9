"""GET /activity: one page of an app's recipient status changes in commit order, and where to go on from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.domain import activity as rules
from mailer.domain.timefmt import rfc3339
from mailer.store import activity as store


def activity_page(
    conn: psycopg.Connection, *, app_id: int, after: tuple[int, int] | None, types: Sequence[str] | None, limit: int
) -> dict[str, Any]:
    """Up to `limit` changes after the cursor, oldest first, each a webhook body plus its id; next_cursor always.

    A short page has returned every change below the watermark (all their transactions ended), so the next
    cursor moves up to the watermark: a filtered walk does not scan the same non-matching rows again."""
    start = after or rules.START
    rows = store.list_activity(conn, app_id=app_id, after_xid=start[0], after_id=start[1], types=types, limit=limit)
    watermark = int(rows[0]["watermark"])
    items = [{"id": row["id"], **row["body"]} for row in rows if row["id"] is not None]
    full = len(items) == limit
    position = (int(rows[-1]["xid"]), int(rows[-1]["id"])) if full else max(start, (watermark, 0))
    return {"items": items, "next_cursor": rules.encode_cursor(*position)}


def recent_page(
    conn: psycopg.Connection,
    *,
    app_id: int,
    before: tuple[int, int] | None,
    types: Sequence[str] | None,
    limit: int,
    scan_limit: int,
) -> dict[str, Any]:
    """The dashboard's page: up to `limit` changes before the cursor, newest first, reading at most `scan_limit`;
    `older` is the cursor of the next page (None at the end). A filtered page may be short, or empty, and still
    have an `older` one: the read stopped at `scan_limit` changes of other types."""
    start = before or (rules.MAX_XID, rules.MAX_ID)
    rows = store.list_recent_activity(
        conn, app_id=app_id, before_xid=start[0], before_id=start[1], types=types, limit=limit + 1,
        scan_limit=max(scan_limit, limit + 1),
    )
    changes = [row for row in rows if row["id"] is not None]
    items = [
        {"id": row["id"], "at": rfc3339(row["created_at"]), "type": rules.TYPE_PREFIX + row["status"],
         "status": row["status"], "email": row["email"], "job_id": str(row["job_id"])}
        for row in changes[:limit]
    ]
    older = None
    if len(changes) > limit:
        older = (int(changes[limit - 1]["xid"]), int(changes[limit - 1]["id"]))
    elif rows and rows[0]["scanned"] >= max(scan_limit, limit + 1):
        older = (int(rows[0]["edge_xid"]), int(rows[0]["edge_id"]))
    return {"items": items, "older": None if older is None else rules.encode_cursor(*older)}
