"""Bearer API keys: who is calling, and whether they are within their request rate limit."""

from __future__ import annotations

import flask

from mailer import db
from mailer.domain import errors
from mailer.services import apps, rate_limits


def current_app_id() -> int:
    """The id of the app whose key authorised this request (counted once against its rate limit)."""
    cached = flask.g.get("app_id")
    if cached is not None:
        return int(cached)
    scheme, _, key = flask.request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise errors.Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    settings = flask.current_app.extensions["mailer.settings"]
    # Two single statements, each its own transaction (no BEGIN/COMMIT round trips): the bucket's row
    # lock is held for its statement only, never for the rest of the request.
    with db.autocommit(flask.current_app.extensions["mailer.pool"]) as conn:
        app_id = apps.authenticate(conn, key.strip())
        rate_limits.limit_app_request(conn, settings, app_id)
    flask.g.app_id = app_id
    return app_id


def require_app_key() -> None:
    """before_request hook for blueprints that need an API key."""
    current_app_id()
