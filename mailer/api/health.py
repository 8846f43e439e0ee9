"""Health and readiness probes."""

from __future__ import annotations

import flask

from mailer import db

bp = flask.Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> flask.Response:
    """The process is up."""
    return flask.jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> flask.Response:
    """The database is reachable (503 otherwise)."""
    db.ping(flask.current_app.extensions["mailer.pool"])
    return flask.jsonify({"status": "ready"})
