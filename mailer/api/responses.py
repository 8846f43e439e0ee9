"""Response schemas (marshmallow): what the API answers, for the OpenAPI document.

The services build the answers as plain dicts; these schemas describe them (they are not used to
serialize), next to the request schemas in `schemas.py` and `schedule_schemas.py`.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from mailer.domain import statuses
from mailer.domain import webhooks as webhook_rules

_ERROR_CODES = (
    "malformed_request", "unauthorized", "not_found", "method_not_allowed", "conflict", "payload_too_large",
    "unsupported_media_type", "validation_error", "rate_limited", "database_unavailable", "internal_error",
)


def _instant(**kwargs: object) -> fields.DateTime:
    """An RFC 3339 time in UTC, as the API writes them."""
    return fields.DateTime(format="iso", required=True, **kwargs)  # type: ignore[arg-type]


def _nullable_instant() -> fields.DateTime:
    return _instant(allow_none=True)


def _job_status() -> fields.String:
    return fields.String(required=True, validate=validate.OneOf(statuses.JOB_STATUSES))


def _priority() -> fields.String:
    return fields.String(required=True, validate=validate.OneOf(statuses.PRIORITIES))


def _counter() -> fields.Integer:
    return fields.Integer(required=True, validate=validate.Range(min=0))


class ErrorBodySchema(Schema):
    code = fields.String(required=True, validate=validate.OneOf(_ERROR_CODES))
    message = fields.String(required=True)
    details = fields.Dict(
        required=True, metadata={"description": "for 422, each bad field (by index in a batch) with its problems"}
    )


class ErrorSchema(Schema):
    """The one error shape of every 4xx and 5xx answer."""

    error = fields.Nested(ErrorBodySchema, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ok", "ready")))


class JobAnswerSchema(Schema):
    """A job's id and the status it has now (POST /queue, cancel, retry, reschedule)."""

    id = fields.UUID(required=True)
    status = _job_status()


class BatchAnswerSchema(Schema):
    """POST /queue with `messages`: one answer per message, in input order."""

    jobs = fields.List(fields.Nested(JobAnswerSchema), required=True)


class TimelineEventSchema(Schema):
    type = fields.String(required=True)
    at = _instant()


class AuditEventSchema(TimelineEventSchema):
    detail = fields.Dict(metadata={"description": "present when the step has details (attempt, error, addresses)"})


class RecipientStatusSchema(Schema):
    email = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("to", "cc", "bcc")))
    message_id = fields.String(
        required=True, allow_none=True, metadata={"description": "Mailjet's MessageID, as a string (above 2^53)"}
    )
    status = fields.String(required=True, validate=validate.OneOf(tuple(statuses.RECIPIENT_STATUS_RANK)))
    events = fields.List(fields.Nested(TimelineEventSchema), required=True)


class TemplateRefAnswerSchema(Schema):
    """The stored template a job or schedule was rendered from."""

    id = fields.UUID(required=True)
    version = fields.Integer(required=True)


class JobStatusSchema(Schema):
    """GET /status/{id}: the job, its recipients with their event timelines, and its audit trail."""

    id = fields.UUID(required=True)
    status = _job_status()
    priority = _priority()
    created_at = _instant()
    updated_at = _instant()
    send_at = _nullable_instant()
    attempts = _counter()
    last_error = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True)
    schedule_id = fields.UUID(required=True, allow_none=True)
    template = fields.Nested(
        TemplateRefAnswerSchema, required=True, allow_none=True,
        metadata={"description": "the stored template and version the message was rendered from; null if none"},
    )
    test = fields.Boolean(required=True, metadata={
        "description": "the job is a test app's (test mode): nothing of it reached Mailjet"})
    recipients = fields.List(fields.Nested(RecipientStatusSchema), required=True)
    events = fields.List(fields.Nested(AuditEventSchema), required=True)


class LogRecipientSchema(Schema):
    email = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("to", "cc", "bcc")))
    status = fields.String(required=True, validate=validate.OneOf(tuple(statuses.RECIPIENT_STATUS_RANK)))


class LogItemSchema(Schema):
    id = fields.UUID(required=True)
    status = _job_status()
    priority = _priority()
    created_at = _instant()
    updated_at = _instant()
    send_at = _nullable_instant()
    attempts = _counter()
    last_error = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True)
    recipients = fields.List(fields.Nested(LogRecipientSchema), required=True)


class TodayCountsSchema(Schema):
    created = _counter()
    sent = _counter()
    failed = _counter()


class LogsPageSchema(Schema):
    """GET /logs: a page of jobs, newest first; `next_cursor` is null on the last page."""

    items = fields.List(fields.Nested(LogItemSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)
    today = fields.Nested(TodayCountsSchema, required=True)


def _rate() -> fields.Float:
    return fields.Float(required=True, allow_none=True, validate=validate.Range(min=0), metadata={
        "description": "count / delivered, 4 decimals; null when delivered is 0; may exceed 1 on a day"})


class RatesSchema(Schema):
    """Each recipient count over `delivered` of the same day (or range)."""

    opened = _rate()
    clicked = _rate()
    bounced = _rate()
    blocked = _rate()
    spam = _rate()
    unsubscribed = _rate()


class CountsSchema(Schema):
    created = _counter()
    sent = _counter()
    failed = _counter()
    suppressed = _counter()
    cancelled = _counter()
    delivered = fields.Integer(required=True, validate=validate.Range(min=0), metadata={
        "description": "recipients whose mail reached the inbox server (or any later milestone) that day"})
    opened = _counter()
    clicked = _counter()
    bounced = _counter()
    blocked = fields.Integer(required=True, validate=validate.Range(min=0), metadata={
        "description": "recipients Mailjet refused to send to (never sent, so not a bounce)"})
    spam = _counter()
    unsubscribed = _counter()
    rates = fields.Nested(RatesSchema, required=True)


class DayCountsSchema(CountsSchema):
    date = fields.Date(required=True)


class StatsSchema(Schema):
    """GET /stats: every UTC day of the range, oldest first, and the range's totals."""

    days = fields.List(fields.Nested(DayCountsSchema), required=True)
    totals = fields.Nested(CountsSchema, required=True, metadata={
        "description": "every count summed over the range, with the rates of the sums"})


class SuppressionEntrySchema(Schema):
    email = fields.String(required=True)
    reason = fields.String(required=True, allow_none=True)
    source = fields.String(required=True, metadata={
        "description": "api, unsubscribe (the one-click link), or the Mailjet event that added it"})
    scope = fields.String(required=True, validate=validate.OneOf(("all", "bulk")), metadata={
        "description": "all: no mail is sent to the address; bulk: only the app's bulk mail is not"})
    created_at = _instant()


class UnsubscribedSchema(Schema):
    email = fields.String(required=True, metadata={"description": "the address the link names"})
    scope = fields.String(required=True, validate=validate.OneOf(("all", "bulk")), metadata={
        "description": "bulk, or all when the address was already suppressed for all mail"})
    unsubscribed = fields.Boolean(required=True)


class SuppressionPageSchema(Schema):
    items = fields.List(fields.Nested(SuppressionEntrySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class WebhookEndpointSchema(Schema):
    id = fields.UUID(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(validate=validate.OneOf((webhook_rules.ALL_EVENTS, *webhook_rules.EVENT_NAMES))),
                         required=True)
    enabled = fields.Boolean(required=True)
    disabled_at = _nullable_instant()
    disabled_reason = fields.String(required=True, allow_none=True)
    previous_secret_expires_at = _nullable_instant()
    created_at = _instant()
    updated_at = _instant()


class WebhookWithSecretSchema(WebhookEndpointSchema):
    """An endpoint with its signing secret, shown this once (create, rotate-secret)."""

    secret = fields.String(required=True, metadata={"description": "whsec_ and the base64 of the key"})


class WebhookListSchema(Schema):
    items = fields.List(fields.Nested(WebhookEndpointSchema), required=True)


class DeliveryAttemptSchema(Schema):
    at = _instant()
    status_code = fields.Integer(required=True, allow_none=True)
    latency_ms = _counter()
    error = fields.String(required=True, allow_none=True)


class WebhookDeliverySchema(Schema):
    id = fields.Integer(required=True)
    webhook_id = fields.String(required=True, metadata={"description": "the webhook-id header, stable across retries"})
    type = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(webhook_rules.DELIVERY_STATUSES))
    in_flight = fields.Boolean(required=True)
    next_attempt_at = _nullable_instant()
    created_at = _instant()
    last_attempt_at = _nullable_instant()
    replay_id = fields.Integer(required=True, allow_none=True, metadata={
        "description": "the replay by window that queued it again (POST /webhooks/{id}/replay); null for a live one"})
    attempts = fields.List(fields.Nested(DeliveryAttemptSchema), required=True)


class WebhookDeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(WebhookDeliverySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ReplayAnswerSchema(Schema):
    id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(webhook_rules.DELIVERY_STATUSES))
    next_attempt_at = _nullable_instant()


class ScheduleSchema(Schema):
    """A recurring schedule; `jobs` (the ids it produced) on single-schedule answers only."""

    id = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("active", "done")))
    message = fields.Dict(required=True, metadata={"description": "the message, as in POST /queue"})
    priority = _priority()
    metadata = fields.Dict(required=True)
    start_at = fields.String(required=True, metadata={"description": "local wall-clock time in `timezone`"})
    timezone = fields.String(required=True)
    frequency = fields.String(required=True)
    interval = fields.Integer(required=True)
    count = fields.Integer(required=True, allow_none=True)
    until = fields.String(required=True, allow_none=True)
    next_occurrence = _nullable_instant()
    upcoming = fields.List(fields.DateTime(format="iso"), required=True)
    created_at = _instant()
    updated_at = _instant()
    finished_at = _nullable_instant()
    template = fields.Nested(
        TemplateRefAnswerSchema, required=True, allow_none=True,
        metadata={"description": "the stored template and version `message` was rendered from; null if none"},
    )
    jobs = fields.List(fields.UUID())


class SchedulePageSchema(Schema):
    items = fields.List(fields.Nested(ScheduleSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class EventsAnswerSchema(Schema):
    """POST /events: how many events came in, were new (not repeats), and matched a recipient."""

    received = _counter()
    new = _counter()
    matched = _counter()
