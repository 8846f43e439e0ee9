"""What the operator dashboard needs beyond the API's use cases: who is looking, its sessions and log-in
limits, and every app at once."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
import uuid
from typing import Any

import psycopg

from mailer import store
from mailer.config import Settings
from mailer.domain import errors
from mailer.services import instance_keys, logs, rate_limits
from mailer.store import apps as apps_store
from mailer.store import dashboard_sessions
from mailer.store.dashboard_sessions import LiveSession
from mailer.store.rate_limits import Decision

SESSION_KEY_NAME = "dashboard-session"
LOGIN_BUCKETS = "dashboard-login:"  # the prefix of the log-in buckets in rate_limit_buckets
LOGIN_BUCKET_ALL = LOGIN_BUCKETS + "*"


def session_key(conn: psycopg.Connection) -> bytes:
    """The installation's key for signing session cookies (when MAILER_SECRET_KEY is not set)."""
    return instance_keys.instance_key(conn, SESSION_KEY_NAME)


def _id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def start_session(
    conn: psycopg.Connection, *, app_id: int | None, key_id: str | None, lifetime_s: float
) -> tuple[str, dt.datetime]:
    """A new server-side session (app_id None: the operator's): its id for the cookie, and when it ends."""
    dashboard_sessions.delete_expired_dashboard_sessions(conn)
    session_id = secrets.token_urlsafe(32)
    expires_at = dashboard_sessions.insert_dashboard_session(
        conn, id_hash=_id_hash(session_id), app_id=app_id, key_id=key_id, lifetime_s=lifetime_s
    )
    return session_id, expires_at


def live_session(conn: psycopg.Connection, session_id: str) -> LiveSession | None:
    """The session with this id unless it was logged out or has expired."""
    return dashboard_sessions.get_dashboard_session(conn, id_hash=_id_hash(session_id))


def end_session(conn: psycopg.Connection, session_id: str) -> None:
    """Log out: every copy of the session's cookie is refused from now on."""
    dashboard_sessions.delete_dashboard_session(conn, id_hash=_id_hash(session_id))


def _login_limits(settings: Settings, address: str) -> tuple[tuple[str, float, str], ...]:
    return (
        (LOGIN_BUCKETS + address, settings.dashboard_logins_per_address_per_min, "from your address"),
        (LOGIN_BUCKET_ALL, settings.dashboard_logins_per_min, "in all"),
    )


def _throttled(decision: Decision, per_min: float, whose: str) -> errors.RateLimited:
    retry_after = max(1, math.ceil(decision.retry_after_s))
    return errors.RateLimited(
        f"too many log-in attempts {whose}; retry in {retry_after} s",
        retry_after_s=retry_after,
        details={"limit_per_min": per_min, "retry_after_s": retry_after},
    )


def limit_login(conn: psycopg.Connection, settings: Settings, address: str) -> None:
    """Count one log-in attempt from `address`; RateLimited when that address, or everyone, tried too often.

    The address's bucket is taken from first, so one address that is refused never drains the global one.
    """
    limits = _login_limits(settings, address)
    for key, per_min, whose in limits:
        decision = rate_limits.take(conn, key, per_min / 60, max(1.0, per_min))
        if not decision.granted:
            raise _throttled(decision, per_min, whose)
    # A bucket left alone until it is full again is the same as no row: keep rows of recent addresses only.
    refill_s = max((60 * max(1.0, per_min) / per_min for _, per_min, _ in limits if per_min > 0), default=0.0)
    if refill_s:
        store.delete_idle_rate_limit_buckets(conn, prefix=LOGIN_BUCKETS, idle_s=refill_s)


def check_login_allowed(conn: psycopg.Connection, settings: Settings, address: str) -> None:
    """RateLimited when a log-in attempt from `address` would be refused now; takes nothing (for bearer
    tokens on the dashboard, whose failures alone are counted)."""
    for key, per_min, whose in _login_limits(settings, address):
        if per_min > 0:
            decision = store.peek_rate_limit_tokens(conn, key=key, rate_per_s=per_min / 60,
                                                    burst=max(1.0, per_min), cost=1)
            if not decision.granted:
                raise _throttled(decision, per_min, whose)


def apps_overview(conn: psycopg.Connection, *, today: dt.date) -> list[dict[str, Any]]:
    """Every app (revoked ones too) with today's counters, for the operator."""
    overview = []
    for app in store.list_apps(conn):
        counts = logs.daily_stats(conn, app_id=app.id, since=today, until=today)["days"][0]
        overview.append({"id": app.id, "name": app.name, "active": app.revoked_at is None, "test": app.test,
                         "today": counts})
    return overview


def find_app(conn: psycopg.Connection, *, app_id: int) -> apps_store.App:
    """An app (its name, whether it is a test app); NotFound when there is no such app."""
    for app in store.list_apps(conn):  # a handful of internal apps: no query of its own needed
        if app.id == app_id:
            return app
    raise errors.NotFound(f"no app {app_id}")


def job_request_id(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID) -> str | None:
    """The request id of the API call that queued a job (None for jobs a schedule made)."""
    job = store.get_job(conn, app_id=app_id, job_id=job_id)
    if job is None:
        raise errors.NotFound(f"no job {job_id}")
    return job.get("request_id")
