"""Apps and their API keys."""

from __future__ import annotations

import dataclasses
import datetime as dt

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class App:
    id: int
    name: str
    key_id: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class AppCredentials:
    id: int
    name: str
    key_hash: bytes


def insert_app(conn: psycopg.Connection, *, name: str, key_id: str, key_hash: bytes) -> App:
    """Register an app with the hash of its key."""
    row = _run.one_row(conn, "insert_app", name=name, key_id=key_id, key_hash=key_hash)
    assert row is not None  # noqa: S101  # INSERT ... RETURNING always returns the row
    return App(**row)


def list_apps(conn: psycopg.Connection) -> list[App]:
    """Every app, revoked ones included."""
    return [App(**row) for row in _run.all_rows(conn, "list_apps")]


def revoke_app(conn: psycopg.Connection, *, name: str) -> App | None:
    """Revoke an app's key; None when there is no active app of that name."""
    row = _run.one_row(conn, "revoke_app", name=name)
    return App(**row) if row else None


def get_app_by_key_id(conn: psycopg.Connection, *, key_id: str) -> AppCredentials | None:
    """The active app that owns a key id."""
    row = _run.one_row(conn, "get_app_by_key_id", key_id=key_id)
    return AppCredentials(id=row["id"], name=row["name"], key_hash=bytes(row["key_hash"])) if row else None


def rotate_app_key(conn: psycopg.Connection, *, name: str, key_id: str, key_hash: bytes) -> App | None:
    """Replace an active app's key; None when there is no active app of that name."""
    row = _run.one_row(conn, "rotate_app_key", name=name, key_id=key_id, key_hash=key_hash)
    return App(**row) if row else None
