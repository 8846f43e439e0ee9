"""mailer: the one service every app uses to send email."""

from __future__ import annotations

import flask
from werkzeug.middleware.proxy_fix import ProxyFix

from mailer import api, dashboard, db, logging_json
from mailer.api import request_log
from mailer.api.json_provider import FastJSONProvider
from mailer.config import Settings
from mailer.services import rate_limits, unsubscribe, webhook_secrets


def create_app(settings: Settings | None = None) -> flask.Flask:
    """The Flask app (the `web` process); nothing connects until it is created."""
    settings = settings or Settings.from_env()
    logging_json.configure(settings)
    app = flask.Flask(__name__)
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    app.extensions["mailer.settings"] = settings
    app.extensions["mailer.pool"] = db.create_pool(settings, name="web")
    app.extensions["mailer.request_limit"] = rate_limits.RequestLimit(settings)  # this process's token leases
    request_log.init_app(app)
    api.init_app(app)
    dashboard.init_app(app, settings)
    webhook_secrets.warn_if_keyed_by_the_database(settings)
    unsubscribe.warn_if_no_public_url(settings)
    app.after_request(_nosniff)
    if settings.trusted_proxy_hops:
        # The client's address as the trusted proxies saw it (X-Forwarded-For), not the last proxy's.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=0, x_host=0, x_port=0, x_prefix=0
        )
    return app


def _nosniff(response: flask.Response) -> flask.Response:
    # Every answer says what it is; no browser may guess another type (gunicorn's own answers say it too).
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
