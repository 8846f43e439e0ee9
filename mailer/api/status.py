"""GET /status/{id}: the whole story of a job."""

from __future__ import annotations

import uuid

import flask

from mailer import db
from mailer.api import apidoc, auth, responses
from mailer.api import errors as api_errors
from mailer.services import status

bp = flask.Blueprint("status", __name__)
bp.before_request(auth.require_app_key)


def parse_job_id(raw: str) -> uuid.UUID:
    """A job id from a URL; an id that is not a UUID is simply unknown (404)."""
    return api_errors.id_or_404(raw, "job")


@bp.get("/status/<job_id>")
@apidoc.operation(responses={200: responses.JobStatusSchema}, path={"job_id": apidoc.UUID}, errors=(404,))
def job_status(job_id: str) -> flask.Response:
    """Job, recipients with their events, and the audit trail."""
    # One snapshot: a recipient's status and its event timeline come from different queries.
    with db.snapshot(flask.current_app.extensions["mailer.pool"]) as conn:
        story = status.job_status(conn, app_id=auth.current_app_id(), job_id=parse_job_id(job_id))
    return flask.jsonify(story)
