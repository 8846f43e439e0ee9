"""Request schemas of /schedules (marshmallow)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from mailer.api.schemas import MessageSchema, StrictSchema, send_at_in_range
from mailer.domain import message as rules
from mailer.domain import recurrence

MAX_CURSOR = 200  # ours are about 100 characters
_EARLIEST = rules.EARLIEST_SEND_AT.replace(tzinfo=None)
_LATEST = rules.LATEST_SEND_AT.replace(tzinfo=None)


class LocalDateTime(fields.Field):
    """An ISO 8601 date-time; with an offset it is converted to the schedule's zone later."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if not isinstance(value, str):
            raise ValidationError("must be an ISO 8601 date-time string")
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError("is not an ISO 8601 date-time") from None
        # A day of slack at both ends: converting between zones must not leave Python's years 1 to 9999.
        if not _EARLIEST <= parsed.replace(tzinfo=None) <= _LATEST:
            raise ValidationError("must be between 0001-01-02 and 9999-12-30")
        return parsed


def _known_timezone(value: str) -> None:
    try:
        recurrence.parse_timezone(value)
    except recurrence.InvalidTimezone as exc:
        raise ValidationError(str(exc)) from None


class _RuleFields(StrictSchema):
    start_at = LocalDateTime()
    timezone = fields.String(validate=[validate.Length(max=64), _known_timezone])
    frequency = fields.String(validate=validate.OneOf(tuple(recurrence.FREQUENCIES)))
    interval = fields.Integer(strict=True, validate=validate.Range(min=1, max=1000))
    count = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=100_000))
    until = LocalDateTime(allow_none=True)

    @validates_schema
    def _check_rule(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("count") is not None and data.get("until") is not None:
            raise ValidationError("give count or until, not both", "count")
        start, until = data.get("start_at"), data.get("until")
        if start is not None and until is not None and _comparable(until) < _comparable(start):
            raise ValidationError("must not be before start_at", "until")


def _comparable(value: dt.datetime) -> dt.datetime:
    # Naive times are local to the same zone, so two naive (or two aware) times compare directly.
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


class ScheduleCreateSchema(_RuleFields):
    """POST /schedules."""

    message = fields.Nested(MessageSchema(exclude=("send_at",)), required=True)
    start_at = LocalDateTime(required=True)
    timezone = fields.String(load_default="UTC", validate=[validate.Length(max=64), _known_timezone])
    frequency = fields.String(required=True, validate=validate.OneOf(tuple(recurrence.FREQUENCIES)))
    interval = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1, max=1000))
    count = fields.Integer(load_default=None, strict=True, allow_none=True, validate=validate.Range(min=1, max=100_000))
    until = LocalDateTime(load_default=None, allow_none=True)


class SchedulePatchSchema(_RuleFields):
    """PATCH /schedules/{id}: any of the fields of POST."""

    message = fields.Nested(MessageSchema(exclude=("send_at",)))


class ScheduleListSchema(StrictSchema):
    """GET /schedules query string."""

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None, validate=validate.Length(min=1, max=MAX_CURSOR))
    status = fields.String(load_default=None, validate=validate.OneOf(("active", "done")))


class SendAtPatchSchema(StrictSchema):
    """PATCH /queue/{id}: move a scheduled job."""

    # The range of POST /queue's send_at: a year-1 time stored here made every later read of the job a 500.
    send_at = fields.AwareDateTime(required=True, format="iso", validate=send_at_in_range)
