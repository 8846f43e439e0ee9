"""GET /activity: the app's recipient status changes, oldest first, in commit order, a page at a time."""

from __future__ import annotations

from typing import Any

import flask
from marshmallow import Schema, ValidationError, fields, validate

from mailer.api import apidoc, auth, reads
from mailer.api.errors import details_from_marshmallow
from mailer.api.schemas import StrictSchema
from mailer.domain import activity as rules
from mailer.domain import errors
from mailer.domain.webhooks import EVENT_NAMES
from mailer.services import activity

bp = flask.Blueprint("activity", __name__)
bp.before_request(auth.require_app_key)

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000  # as GET /logs
TYPES_MAX_LENGTH = 1000


class ActivityCursor(fields.Field):
    """The opaque next_cursor of an earlier page: the (transaction id, row id) of the last change seen."""

    default_error_messages = {"invalid": "is not a cursor from this API"}  # noqa: RUF012  # marshmallow's API

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[int, int]:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return rules.decode_cursor(value)
        except ValueError:
            raise self.make_error("invalid") from None


class ActivityTypes(fields.Field):
    """Comma-separated webhook event types (`email.delivered,email.bounced`; `delivered` works too)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, str) or not value.strip() or len(value) > TYPES_MAX_LENGTH:
            raise ValidationError("give one or more comma-separated types, such as email.delivered,email.bounced")
        try:
            return rules.parse_types(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class ActivityArgs(StrictSchema):
    """The query of GET /activity."""

    cursor = ActivityCursor(load_default=None, metadata={
        "type": "string", "description": "next_cursor of the page before (opaque)"})
    limit = fields.Integer(load_default=LIMIT_DEFAULT, strict=False, validate=validate.Range(min=1, max=LIMIT_MAX))
    types = ActivityTypes(load_default=None, metadata={
        "type": "string", "description": "comma-separated types to keep, e.g. email.delivered,email.bounced"})


class ActivityDataSchema(Schema):
    job_id = fields.UUID(required=True)
    recipient = fields.String(required=True)
    message_id = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(EVENT_NAMES))
    metadata = fields.Dict(required=True, allow_none=True)
    event = fields.Dict(required=True, metadata={"description": "what happened: type, at, and Mailjet's detail"})


class ActivityItemSchema(Schema):
    """One recipient status change: the outbound webhook body plus its id (its place in the feed)."""

    id = fields.Integer(required=True)
    type = fields.String(required=True, validate=validate.OneOf(tuple(rules.TYPE_PREFIX + n for n in EVENT_NAMES)))
    timestamp = fields.DateTime(format="iso", required=True)
    data = fields.Nested(ActivityDataSchema, required=True)


class ActivityPageSchema(Schema):
    """GET /activity: changes oldest first; next_cursor is always given (an empty page is where to poll from)."""

    items = fields.List(fields.Nested(ActivityItemSchema), required=True)
    next_cursor = fields.String(required=True)


def _query() -> dict[str, Any]:
    """The query string, validated: each parameter at most once, unknown ones refused."""
    args = flask.request.args
    repeated = sorted(key for key in args if len(args.getlist(key)) > 1)
    if repeated:
        raise errors.ValidationFailed(
            "a query parameter is given more than once", {key: ["is given more than once"] for key in repeated}
        )
    try:
        return ActivityArgs().load(args.to_dict())  # type: ignore[no-any-return]  # a dict: not many=True
    except ValidationError as exc:
        raise errors.ValidationFailed("the query is not valid", details_from_marshmallow(exc.messages)) from None


@bp.get("/activity")
@apidoc.operation(
    query=ActivityArgs,
    responses={200: ActivityPageSchema},
    description="Walk it with `cursor=next_cursor`: every recipient status change of the app comes once, in "
    "commit order, including changes committed while the walk goes on. A change appears once every "
    "transaction that was writing when it committed has ended. `next_cursor` is never null: an empty page's "
    "is where to poll from.",
)
def list_activity() -> flask.Response:
    """The app's recipient status changes after the cursor, oldest first."""
    query = _query()
    app_id = auth.current_app_id()
    page = reads.listing(lambda conn: activity.activity_page(
        conn, app_id=app_id, after=query["cursor"], types=query["types"], limit=query["limit"]))
    return flask.jsonify(page)
