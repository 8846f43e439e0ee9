"""GET/POST /suppressions and DELETE /suppressions/{email}: the app's suppression list."""

from __future__ import annotations

from typing import Any

import flask
from marshmallow import Schema

from mailer import db
from mailer.api import apidoc, auth, body, responses, schemas
from mailer.api import errors as api_errors
from mailer.domain import errors
from mailer.services import suppressions

bp = flask.Blueprint("suppressions", __name__)
bp.before_request(auth.require_app_key)


def _load(schema: Schema, data: Any, what: str) -> dict[str, Any]:
    return api_errors.load_or_422(schema, data, f"the {what} is not valid")


@bp.get("/suppressions")
@apidoc.operation(query=schemas.SuppressionListArgs, responses={200: responses.SuppressionPageSchema})
def list_suppressions() -> flask.Response:
    """One page of the list, newest first; `next_cursor` fetches the next one."""
    args = flask.request.args
    repeated = sorted(key for key in args if len(args.getlist(key)) > 1)
    if repeated:
        raise errors.ValidationFailed(
            "a query parameter is given more than once", {key: ["is given more than once"] for key in repeated}
        )
    query = _load(schemas.SuppressionListArgs(), args.to_dict(), "query")
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        page = suppressions.list_page(
            conn, app_id=auth.current_app_id(), limit=query["limit"], cursor=query["cursor"], email=query["email"]
        )
    return flask.jsonify(page)


@bp.post("/suppressions")
@apidoc.operation(
    body=schemas.SuppressionSchema,
    responses={200: responses.SuppressionEntrySchema, 201: responses.SuppressionEntrySchema},
)
def add_suppression() -> tuple[flask.Response, int]:
    """Put an address on the list: 201 with the new entry, 200 with the existing one (unchanged)."""
    loaded = _load(schemas.SuppressionSchema(), body.json_body(), "request")
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        entry, created = suppressions.add(
            conn, app_id=auth.current_app_id(), email=loaded["email"], reason=loaded["reason"],
            scope=loaded["scope"],
        )
    return flask.jsonify(entry), 201 if created else 200


@bp.delete("/suppressions/<path:email>")
@apidoc.operation(responses={204: None}, errors=(404,))
def delete_suppression(email: str) -> flask.Response:
    """Take an address off the list (matched case-insensitively): 204, or 404 when it is not there."""
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        suppressions.remove(conn, app_id=auth.current_app_id(), email=email)
    return flask.Response(status=204)
