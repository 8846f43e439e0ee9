"""Where the primary's WAL stands and how far a read replica has replayed it."""

from __future__ import annotations

from typing import Any

import psycopg

from mailer.store import _run


def get_primary_wal_position(conn: psycopg.Connection) -> int:
    """The primary's WAL write position, in bytes."""
    row = _run.one_row(conn, "get_primary_wal_position")
    assert row is not None  # noqa: S101  # a SELECT without FROM has one row
    return int(row["written_bytes"])


def get_replica_position(conn: psycopg.Connection) -> dict[str, Any]:
    """in_recovery, received_bytes, replayed_bytes, replay_age_s (None when unknown) of a replica."""
    row = _run.one_row(conn, "get_replica_position")
    assert row is not None  # noqa: S101  # a SELECT without FROM has one row
    return row
