"""Health and readiness probes."""

from __future__ import annotations

import flask

from mailer import db
from mailer.api import apidoc, responses

bp = flask.Blueprint("health", __name__)


@bp.get("/healthz")
@apidoc.operation(responses={200: responses.HealthSchema}, auth="none", database=False)
def healthz() -> flask.Response:
    """The process is up."""
    return flask.jsonify({"status": "ok"})


@bp.get("/readyz")
@apidoc.operation(responses={200: responses.HealthSchema}, auth="none")
def readyz() -> flask.Response:
    """The database is reachable (503 otherwise)."""
    db.ping(flask.current_app.extensions["mailer.pool"])
    return flask.jsonify({"status": "ready"})
