"""The operator dashboard (/dashboard): server-rendered pages, a login form and a signed session cookie."""

from __future__ import annotations

import datetime as dt
import logging
import secrets

import flask

from mailer.config import Settings

log = logging.getLogger(__name__)

SESSION_LIFETIME = dt.timedelta(hours=12)


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
    app.register_blueprint(views.bp)
