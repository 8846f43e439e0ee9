"""Apps and their API keys."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class App:
    id: int
    name: str
    key_id: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    from_domains: list[str] | None = None  # None: any domain
    test: bool = False  # a test app (test mode): the worker answers its sends instead of Mailjet


@dataclasses.dataclass(frozen=True)
class AppCredentials:
    id: int
    name: str
    key_hash: bytes
    test: bool = False


def insert_app(
    conn: psycopg.Connection, *, name: str, key_id: str, key_hash: bytes, from_domains: Sequence[str] | None = None,
    test: bool = False,
) -> App:
    """Register an app with the hash of its key (and the domains it may send from, None: any; a test app?)."""
    row = _run.one_row(
        conn, "insert_app", name=name, key_id=key_id, key_hash=key_hash,
        from_domains=None if from_domains is None else list(from_domains), test=test,
    )
    assert row is not None  # noqa: S101  # INSERT ... RETURNING always returns the row
    return App(**row)


def list_apps(conn: psycopg.Connection) -> list[App]:
    """Every app, revoked ones included."""
    return [App(**row) for row in _run.all_rows(conn, "list_apps")]


def lock_app_by_name(conn: psycopg.Connection, *, name: str) -> App | None:
    """An app by name, revoked or not, locked against changes until the transaction ends; None if unknown."""
    row = _run.one_row(conn, "lock_app_by_name", name=name)
    return App(**row) if row else None


def revoke_app(conn: psycopg.Connection, *, app_id: int) -> App | None:
    """Revoke an app's key; None when the app is unknown or revoked already."""
    row = _run.one_row(conn, "revoke_app", id=app_id)
    return App(**row) if row else None


def get_app_by_key_id(conn: psycopg.Connection, *, key_id: str) -> AppCredentials | None:
    """The active app that owns a key id."""
    row = _run.one_row(conn, "get_app_by_key_id", key_id=key_id)
    if row is None:
        return None
    return AppCredentials(id=row["id"], name=row["name"], key_hash=bytes(row["key_hash"]), test=row["test"])


def get_app_sending_rules(conn: psycopg.Connection, *, app_id: int) -> dict[str, Any] | None:
    """An app's key id, revoked_at and from_domains (None: any domain); None when the app is unknown."""
    return _run.one_row(conn, "get_app_sending_rules", id=app_id)


def rotate_app_key(conn: psycopg.Connection, *, name: str, key_id: str, key_hash: bytes) -> App | None:
    """Replace an active app's key; None when there is no active app of that name."""
    row = _run.one_row(conn, "rotate_app_key", name=name, key_id=key_id, key_hash=key_hash)
    return App(**row) if row else None


def set_app_from_domains(conn: psycopg.Connection, *, name: str, from_domains: Sequence[str] | None) -> App | None:
    """Change the domains an active app may send from (None: any); None when there is no active app of that name."""
    row = _run.one_row(
        conn, "set_app_from_domains", name=name, from_domains=None if from_domains is None else list(from_domains)
    )
    return App(**row) if row else None


def cancel_jobs_of_app(conn: psycopg.Connection, *, app_id: int) -> int:
    """Cancel the app's scheduled and queued jobs (audit event app_revoked); how many."""
    return len(_run.all_rows(conn, "cancel_jobs_of_app", app_id=app_id))


def finish_schedules_of_app(conn: psycopg.Connection, *, app_id: int) -> int:
    """Mark the app's active schedules done; how many."""
    return len(_run.all_rows(conn, "finish_schedules_of_app", app_id=app_id))


def disable_webhook_endpoints_of_app(conn: psycopg.Connection, *, app_id: int, reason: str) -> list[Any]:
    """Disable the app's enabled webhook endpoints with this reason; their ids."""
    return [row["id"] for row in _run.all_rows(conn, "disable_webhook_endpoints_of_app", app_id=app_id, reason=reason)]
