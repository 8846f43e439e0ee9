"""What the operator dashboard needs beyond the API's use cases: who is looking, its sessions and log-in
limits, every app at once, and the input of a template's preview form."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import math
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg

from mailer import store
from mailer.config import Settings
from mailer.domain import engagement, errors, json_depth
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


def apps_overview(conn: psycopg.Connection, *, since: dt.date, until: dt.date) -> dict[str, Any]:
    """Every app (revoked ones too) with its counters of `until` and its totals since..until, and the days and
    totals across all live apps (test apps' simulated opens would skew them), for the operator: one read of the
    counters."""
    every_app = store.list_apps(conn)
    rows = store.list_overview_counts(conn, since=since, until=until, left_out=[a.id for a in every_app if a.test])
    totals: dict[int, dict[str, int]] = collections.defaultdict(dict)
    last_day: dict[int, dict[str, int]] = collections.defaultdict(dict)
    live = []
    for row in rows:
        if row["across_apps"]:
            live.append({"day": row["day"], "kind": row["kind"], "count": row["kept"]})
        else:
            totals[row["app_id"]][row["kind"]] = row["count"]
            last_day[row["app_id"]][row["kind"]] = row["last_day"]
    apps = [{"id": app.id, "name": app.name, "active": app.revoked_at is None, "test": app.test,
             "today": engagement.day_entry(until.isoformat(), last_day[app.id]),
             "totals": engagement.totals([totals[app.id]])} for app in every_app]
    return {"apps": apps, **logs.stats_of_days(live, since, until)}


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


# --- the templates pages ---


def example_variables(schema: Mapping[str, Any] | None) -> str:
    """The variables a template's preview form starts with: its schema's first example, else `{}`."""
    examples = (schema or {}).get("examples")
    if isinstance(examples, list) and examples and isinstance(examples[0], dict):
        return json.dumps(examples[0], indent=2, ensure_ascii=False)
    return "{}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def preview_variables(raw: str, *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """The variables typed into a preview form: a JSON object within the bounds; ValidationFailed naming
    `variables` otherwise (as POST /templates/{id}/render would refuse them)."""
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise errors.ValidationFailed(
            f"the variables are {size} bytes; a preview takes at most {max_bytes} (MAILER_DASHBOARD_PREVIEW_MAX_BYTES)",
            {"variables": [f"at most {max_bytes} bytes"]},
        )
    try:
        variables = json.loads(raw or "{}", parse_constant=_refuse_constant)
        json_depth.check(raw.encode("utf-8", "surrogatepass"), variables, max_depth)
        # A lone surrogate ("\ud800") parses but cannot be written out as UTF-8: refused like the API does.
        json.dumps(variables, ensure_ascii=False).encode("utf-8")
    except json_depth.TooDeep as exc:
        raise errors.ValidationFailed("the variables nest too deep", {"variables": [str(exc)]}) from None
    except (ValueError, RecursionError) as exc:  # UnicodeEncodeError and JSONDecodeError are ValueErrors
        raise errors.ValidationFailed(
            "the variables are not valid JSON", {"variables": [f"not valid JSON: {str(exc)[:200]}"]}
        ) from None
    if not isinstance(variables, dict):
        raise errors.ValidationFailed("the variables must be a JSON object", {"variables": ["must be a JSON object"]})
    return variables


def preview_version(raw: str | None) -> int | None:
    """The version a preview form chose (None: the active one); ValidationFailed naming `version`."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or not 1 <= int(text) <= 2**31 - 1:
        raise errors.ValidationFailed("the version is not valid", {"version": ["a version number (1, 2, ...)"]})
    return int(text)
