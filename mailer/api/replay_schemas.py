"""The body and answer of POST /webhooks/{id}/replay (replay by window)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from mailer.api.schemas import StrictSchema
from mailer.domain import activity as type_rules
from mailer.domain.webhooks import EVENT_NAMES

# RFC 3339 with an offset (Z or ±hh:mm); a bare date or a time without offset is refused.
_INSTANT = re.compile(r"\A(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII)
MAX_TYPES = len(EVENT_NAMES)
MAX_TYPE_LENGTH = 50


class Instant(fields.Field):
    """An RFC 3339 time with offset, returned in UTC."""

    default_error_messages = {  # noqa: RUF012  # marshmallow's API
        "invalid": "must be an RFC 3339 time with offset, such as 2026-11-22T09:00:00Z"
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        match = _INSTANT.match(value) if isinstance(value, str) else None
        if not match:
            raise self.make_error("invalid")
        offset = "+00:00" if match[4].upper() == "Z" else match[4]
        try:
            return dt.datetime.fromisoformat(f"{match[1]}T{match[2]}{(match[3] or '')[:7]}{offset}").astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise self.make_error("invalid") from None


class ReplayTypes(fields.Field):
    """Webhook event types (`email.delivered`; `delivered` works too), as a list."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, list) or not value or len(value) > MAX_TYPES or not all(
            isinstance(item, str) and 0 < len(item) <= MAX_TYPE_LENGTH and "," not in item for item in value
        ):
            raise ValidationError(f"give a list of 1 to {MAX_TYPES} types, such as [\"email.delivered\"]")
        try:
            return type_rules.parse_types(",".join(value))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class ReplaySchema(StrictSchema):
    """The body of POST /webhooks/{id}/replay."""

    since = Instant(required=True, metadata={"type": "string", "format": "date-time"})
    until = Instant(required=True, metadata={"type": "string", "format": "date-time"})
    types = ReplayTypes(load_default=None, metadata={
        "type": "array", "items": {"type": "string"},
        "description": "types to replay (default: all the endpoint subscribes to), e.g. [\"email.bounced\"]"})


class WebhookReplaySchema(Schema):
    """A replay by window: how many deliveries it queues and how far it has got."""

    id = fields.Integer(required=True)
    queued = fields.Integer(required=True, metadata={
        "description": "the matching events of the window, each delivered again with its original webhook-id"})
    expanded = fields.Integer(required=True, metadata={"description": "of those, how many are queued so far"})
    status = fields.String(required=True, validate=validate.OneOf(("running", "done", "cancelled")))
    since = fields.String(required=True)
    until = fields.String(required=True, metadata={"description": "the end of the window (at most the request's time)"})
    types = fields.List(fields.String(), required=True)
    created_at = fields.String(required=True)
    finished_at = fields.String(required=True, allow_none=True)
