"""The operator dashboard (/dashboard): server-rendered pages, a login form and a signed session cookie."""

from __future__ import annotations

import datetime as dt
import logging
import secrets

import flask
import flask.sessions

from mailer.config import Settings

log = logging.getLogger(__name__)

SESSION_LIFETIME = dt.timedelta(hours=12)


class DashboardSessions(flask.sessions.SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building a signer for a request that has no session cookie
    (every API call: building it was 3.8 % of the web's CPU on POST /queue)."""

    def open_session(self, app: flask.Flask, request: flask.Request) -> flask.sessions.SecureCookieSession | None:
        """An empty session when the request carries no cookie of ours; else Flask's own (which also refuses
        sessions when no secret key is set)."""
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Configure the session cookie and register the dashboard's blueprint."""
    from mailer.dashboard import views

    if settings.secret_key is None:
        log.warning("MAILER_SECRET_KEY is not set: dashboard logins last only as long as this process "
                    "and hold only on it; set it when more than one web process runs")
    app.secret_key = settings.secret_key or secrets.token_hex(32)
    app.config.update(
        SESSION_COOKIE_NAME="mailer_dashboard",
        SESSION_COOKIE_PATH="/dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = DashboardSessions()
    app.register_blueprint(views.bp)
