"""Bearer API keys: who is calling."""

from __future__ import annotations

import flask

from mailer import db
from mailer.domain import errors
from mailer.services import apps


def current_app_id() -> int:
    """The id of the app whose key authorised this request."""
    cached = flask.g.get("app_id")
    if cached is not None:
        return int(cached)
    scheme, _, key = flask.request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise errors.Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        flask.g.app_id = apps.authenticate(conn, key.strip())
    return int(flask.g.app_id)


def require_app_key() -> None:
    """before_request hook for blueprints that need an API key."""
    current_app_id()
