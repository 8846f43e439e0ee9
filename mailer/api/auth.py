"""Bearer API keys: who is calling, and whether they are within their request rate limit."""

from __future__ import annotations

import flask
import psycopg

from mailer import db
from mailer.domain import errors
from mailer.services import apps, rate_limits


def current_app_id() -> int:
    """The id of the app whose key authorised this request (counted once against its rate limit)."""
    cached = flask.g.get("app_id")
    if cached is not None and flask.g.get("key_id_to_confirm") is None:
        return int(cached)
    key = _bearer_key()
    # Single statements, each its own transaction (no BEGIN/COMMIT round trips): the bucket's row lock is
    # held for its statement only, never for the rest of the request.
    with db.autocommit(flask.current_app.extensions["mailer.pool"]) as conn:
        app_id = apps.authenticate(conn, key)
        if cached is None:  # a recalled key has counted this request already
            _limit(conn, app_id)
    flask.g.app_id, flask.g.key_id_to_confirm = app_id, None
    return app_id


def test_key() -> bool:
    """Whether the request's key, once authenticated, is a test app's (its prefix says it)."""
    return apps.is_test_key(_bearer_key())


def recalled_caller() -> tuple[int, str | None]:
    """(app id, key id that the request's one statement must confirm, or None if looked up just now)."""
    # For POST /queue, whose insert_jobs checks that the key id is still the app's active one: a key this
    # process authenticated before needs no lookup of its own.
    recalled = apps.recall(_bearer_key())
    if recalled is None:
        return current_app_id(), None
    app_id, key_id = recalled
    if not _request_limit().take_held(app_id):  # usually a token this process leased: no statement at all
        with db.autocommit(flask.current_app.extensions["mailer.pool"]) as conn:
            try:
                _request_limit().take(conn, app_id)
            except errors.RateLimited:
                apps.authenticate(conn, _bearer_key())  # a revoked key is 401, not 429
                raise
    flask.g.app_id, flask.g.key_id_to_confirm = app_id, key_id
    return app_id, key_id


def forget_recalled_key() -> None:
    """The statement found the recalled key revoked or rotated: authenticate it afresh next time."""
    apps.forget(_bearer_key())


def require_app_key() -> None:
    """before_request hook for blueprints that need an API key."""
    current_app_id()


def _bearer_key() -> str:
    scheme, _, key = flask.request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise errors.Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    return key.strip()


def _limit(conn: psycopg.Connection, app_id: int) -> None:
    _request_limit().take(conn, app_id)


def _request_limit() -> rate_limits.RequestLimit:
    return flask.current_app.extensions["mailer.request_limit"]  # type: ignore[no-any-return]
