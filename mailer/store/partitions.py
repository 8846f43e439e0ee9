"""Month partitions of history tables: created ahead by housekeeping, dropped whole by retention."""

from __future__ import annotations

import datetime

import psycopg

from mailer.store import _run


def ensure_month_partitions(
    conn: psycopg.Connection, parent: str, kind: str, first_month: datetime.date, last_month: datetime.date
) -> int:
    """Create the missing month partitions of `parent` from first_month to last_month; how many."""
    row = _run.one_row(conn, "ensure_month_partitions", parent=parent, kind=kind,
                       first_month=first_month, last_month=last_month)
    return int(row["created"]) if row else 0


def ensure_registered_partitions(
    conn: psycopg.Connection, today: datetime.date, ahead: int, lock_timeout_ms: int
) -> tuple[int, list[str]]:
    """Every registered parent's months from the one before `today` to `ahead` after it; (made, parents failed).

    Each parent's DDL waits at most lock_timeout_ms for a lock; a parent that fails does not stop the others.
    """
    _run.all_rows(conn, "set_partition_lock_timeout", lock_timeout=f"{lock_timeout_ms}ms")
    row = _run.one_row(conn, "ensure_registered_partitions", today=today, ahead=ahead)
    return (int(row["created"]), list(row["failed"])) if row else (0, [])


def month_partitions(conn: psycopg.Connection, parent: str) -> list[tuple[str, datetime.date]]:
    """`parent`'s month partitions (name, first day), oldest first."""
    return [(row["partition"], row["month"]) for row in _run.all_rows(conn, "month_partitions", parent=parent)]


def drop_month_partition(conn: psycopg.Connection, parent: str, month: datetime.date, lock_timeout_ms: int) -> bool:
    """Drop `month`'s partition of `parent` (waiting at most lock_timeout_ms for the lock); whether it did.

    Raises psycopg.errors.LockNotAvailable when the parent stays busy: the caller tries again on its next run.
    """
    with conn.transaction():
        _run.all_rows(conn, "set_partition_lock_timeout", lock_timeout=f"{lock_timeout_ms}ms")
        row = _run.one_row(conn, "drop_month_partition", parent=parent, month=month)
    return bool(row and row["dropped"])
