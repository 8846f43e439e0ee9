"""The operator dashboard (/dashboard): server-rendered pages, a login form and a signed session cookie.

The cookie holds a session id whose row in Postgres (dashboard_sessions) is checked on every request: a
log-out deletes it, and it ends a fixed time after the log-in (no request extends it). The cookie is signed
with MAILER_SECRET_KEY, or else with a key kept in the database, the same for every process.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import flask
import flask.sessions
from itsdangerous import URLSafeTimedSerializer

from mailer import db
from mailer.config import Settings
from mailer.domain import errors
from mailer.services import dashboard

log = logging.getLogger(__name__)

COOKIE_NAME = "mailer_dashboard"


class DashboardSessions(flask.sessions.SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building a signer for a request that has no session cookie
    (every API call: building it was 3.8 % of the web's CPU on POST /queue), and with a signing key read
    from the database on first use when MAILER_SECRET_KEY is not set."""

    def __init__(self) -> None:
        self._key_lock = threading.Lock()

    def signing_key(self, app: flask.Flask) -> str | bytes:
        """MAILER_SECRET_KEY, or the installation's session key (read once per process); DatabaseUnavailable
        when it has to be read and cannot be."""
        if not app.secret_key:
            with self._key_lock:
                if not app.secret_key:
                    with db.autocommit(app.extensions["mailer.pool"]) as conn:
                        app.secret_key = dashboard.session_key(conn)
        return app.secret_key  # type: ignore[return-value]  # set just above when it was not

    def get_signing_serializer(self, app: flask.Flask) -> URLSafeTimedSerializer | None:
        """Flask's serializer, over the key of signing_key()."""
        self.signing_key(app)
        return super().get_signing_serializer(app)

    def open_session(self, app: flask.Flask, request: flask.Request) -> flask.sessions.SecureCookieSession | None:
        """An empty session when the request carries no cookie of ours, or when the key cannot be read (the
        database is down: the pages will say so); else Flask's own."""
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        try:
            self.signing_key(app)
        except errors.DatabaseUnavailable:
            log.warning("dashboard: the session key could not be read (database unavailable)")
            return self.session_class()
        return super().open_session(app, request)

    def get_expiration_time(self, app: flask.Flask, session: flask.sessions.SessionMixin) -> dt.datetime | None:
        """The session's own end, fixed at its log-in (not now + the lifetime, as Flask would have it)."""
        ends = session.get("exp")
        if session.permanent and isinstance(ends, int):
            return dt.datetime.fromtimestamp(ends, dt.UTC)
        return super().get_expiration_time(app, session)


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Configure the session cookie and register the dashboard's blueprint."""
    from mailer.dashboard import (
        feed_pages,  # noqa: F401  # adds its routes to views.bp before it registers
        template_pages,  # noqa: F401  # adds its routes to views.bp before it registers
        views,
    )

    app.secret_key = settings.secret_key  # None: DashboardSessions reads the installation's key when needed
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH="/dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.dashboard_cookie_secure,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=settings.dashboard_session_lifetime_s),
        # The session ends at its log-in time + the lifetime; a response that re-sent the cookie would
        # only move the browser's copy of that end, never the server's.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.session_interface = DashboardSessions()
    app.register_blueprint(views.bp)
