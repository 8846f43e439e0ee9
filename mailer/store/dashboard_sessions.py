"""Dashboard sessions kept on the server (the cookie holds only the session id)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class LiveSession:
    """A session that has not expired: whose it is (app_id None: the operator) and whether its key still is."""

    app_id: int | None
    key_current: bool


def insert_dashboard_session(
    conn: psycopg.Connection, *, id_hash: bytes, app_id: int | None, key_id: str | None, lifetime_s: float
) -> dt.datetime:
    """Store a new session that ends `lifetime_s` from now; when it ends."""
    row = _run.one_row(
        conn, "insert_dashboard_session", id_hash=id_hash, app_id=app_id, key_id=key_id, lifetime_s=float(lifetime_s)
    )
    assert row is not None  # noqa: S101  # INSERT ... RETURNING returns the row it inserted
    return row["expires_at"]  # type: ignore[no-any-return]


def get_dashboard_session(conn: psycopg.Connection, *, id_hash: bytes) -> LiveSession | None:
    """The live session with this id hash, or None (unknown, logged out or expired)."""
    row = _run.one_row(conn, "get_dashboard_session", id_hash=id_hash)
    return None if row is None else LiveSession(app_id=row["app_id"], key_current=row["key_current"])


def delete_dashboard_session(conn: psycopg.Connection, *, id_hash: bytes) -> None:
    """End a session for every copy of its cookie."""
    _run.all_rows(conn, "delete_dashboard_session", id_hash=id_hash)


def delete_expired_dashboard_sessions(conn: psycopg.Connection) -> None:
    """Remove the sessions past their lifetime."""
    _run.all_rows(conn, "delete_expired_dashboard_sessions")
