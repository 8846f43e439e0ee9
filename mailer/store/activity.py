"""The activity feed: recipient status changes in commit order (recipient_activity, migration 0039)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


def list_activity(
    conn: psycopg.Connection,
    *,
    app_id: int,
    after_xid: int,
    after_id: int,
    types: Sequence[str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to `limit` changes after (after_xid, after_id), oldest first; every row carries the watermark (an
    empty page is one row whose id is None)."""
    return _run.all_rows(
        conn, "activity_page", app_id=app_id, after_xid=str(after_xid), after_id=after_id,
        types=None if types is None else list(types), limit=limit,
    )


def list_recent_activity(
    conn: psycopg.Connection,
    *,
    app_id: int,
    before_xid: int,
    before_id: int,
    types: Sequence[str] | None,
    limit: int,
    scan_limit: int,
) -> list[dict[str, Any]]:
    """Up to `limit` changes before (before_xid, before_id), newest first, among at most `scan_limit` read; every
    row carries how many were read and the oldest read (an empty page is one row whose id is None, or none)."""
    return _run.all_rows(
        conn, "activity_recent", app_id=app_id, before_xid=str(before_xid), before_id=before_id,
        types=None if types is None else list(types), limit=limit, scan_limit=scan_limit,
    )
