"""GET /activity: one page of an app's recipient status changes in commit order, and where to go on from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.domain import activity as rules
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
