"""GET /logs (the app's jobs, newest first, a page at a time) and GET /stats (its counters per day)."""

from __future__ import annotations

from typing import Any

import flask
from marshmallow import Schema, ValidationError

from mailer.api import apidoc, auth, reads, responses, schemas
from mailer.api.errors import details_from_marshmallow
from mailer.domain import errors
from mailer.services import logs

bp = flask.Blueprint("logs", __name__)
bp.before_request(auth.require_app_key)


def _query(schema: Schema) -> dict[str, Any]:
    """The query string, validated: each parameter at most once, unknown ones refused."""
    args = flask.request.args
    repeated = sorted(key for key in args if len(args.getlist(key)) > 1)
    if repeated:
        raise errors.ValidationFailed(
            "a query parameter is given more than once", {key: ["is given more than once"] for key in repeated}
        )
    try:
        return schema.load(args.to_dict())  # type: ignore[no-any-return]  # a dict: not many=True
    except ValidationError as exc:
        raise errors.ValidationFailed("the query is not valid", details_from_marshmallow(exc.messages)) from None


@bp.get("/logs")
@apidoc.operation(
    # `metadata.KEY=VALUE` parameters (any number of keys) cannot be listed one by one: see the description.
    query=schemas.LogsArgs(exclude=("metadata",)),
    responses={200: responses.LogsPageSchema},
    description="Filter on metadata with `metadata.KEY=VALUE` (VALUE read as JSON when it parses: "
    "`metadata.order_id=1001`); up to 20 such filters, all of which must match.",
)
def list_logs() -> flask.Response:
    """One page of the app's jobs, newest first, with next_cursor and today's counters."""
    query = _query(schemas.LogsArgs())
    app_id = auth.current_app_id()  # on the primary: a key made a moment ago may not be on the replica yet
    # One snapshot: the page, its recipients and today's counters come from different queries.
    page = reads.listing(
        lambda conn: logs.log_page(
            conn,
            app_id=app_id,
            limit=query["limit"],
            before=query["cursor"],
            status=query["status"],
            recipient=query["recipient"],
            since=query["since"],
            until=query["until"],
            metadata=query["metadata"],
        ),
        snapshot=True,
    )
    return flask.jsonify(page)


@bp.get("/stats")
@apidoc.operation(query=schemas.StatsArgs, responses={200: responses.StatsSchema})
def stats() -> flask.Response:
    """The app's counters per UTC day (jobs by status, recipients by milestone, rates over delivered) and totals."""
    query = _query(schemas.StatsArgs())
    app_id = auth.current_app_id()
    answer = reads.listing(lambda conn: logs.daily_stats(conn, app_id=app_id, since=query["since"],
                                                         until=query["until"]))
    return flask.jsonify(answer)
