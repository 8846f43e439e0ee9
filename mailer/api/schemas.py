"""Request schemas (marshmallow): they validate, and they are the API's documentation."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from typing import Any

import flask
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from mailer.config import Settings
from mailer.domain import json_depth, statuses
from mailer.domain import message as rules
from mailer.domain import webhooks as webhook_rules
from mailer.services import logs as log_rules


def _no_line_break(value: str) -> None:
    if rules.has_line_break(value):
        raise ValidationError("must not contain CR or LF")


def _header_name(value: str) -> None:
    if not rules.HEADER_NAME.match(value):
        raise ValidationError("is not a valid header name")
    if value.lower() in rules.FORBIDDEN_HEADERS:
        raise ValidationError(f"{value} cannot be set (Mailjet sets it, or a field of its own does)")
    if value.lower().startswith(rules.MAILJET_CONTROL_PREFIX):
        raise ValidationError(f"{value} cannot be set: X-MJ-* headers steer Mailjet itself")


def send_at_in_range(value: dt.datetime) -> None:
    try:
        in_range = rules.EARLIEST_SEND_AT <= value.astimezone(dt.UTC) <= rules.LATEST_SEND_AT
    except OverflowError:
        in_range = False
    if not in_range:
        raise ValidationError("must be between the years 1 and 9999")


def _base64(value: str) -> None:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("is not valid base64") from None


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class AddressSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=256), _no_line_break])


class AttachmentSchema(StrictSchema):
    filename = fields.String(required=True, validate=[validate.Length(min=1, max=255), _no_line_break])
    content_type = fields.String(
        required=True, validate=validate.Regexp(r"\A[\w.+-]+/[\w.+-]+\Z", error="is not a MIME type")
    )
    content = fields.String(required=True, validate=_base64)


class TemplateRefSchema(StrictSchema):
    """A stored template named in a message: its id, and a version (the active one when absent)."""

    id = fields.UUID(required=True)
    version = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1, max=2**31 - 1)
    )


_TEMPLATE_GIVES = "must be absent when the message names a template: the template gives it"


class MessageSchema(StrictSchema):
    """One message of POST /queue."""

    from_ = fields.Nested(AddressSchema, required=True, data_key="from")
    to = fields.List(fields.Nested(AddressSchema), required=True, validate=validate.Length(min=1))
    cc = fields.List(fields.Nested(AddressSchema), load_default=list)
    bcc = fields.List(fields.Nested(AddressSchema), load_default=list)
    reply_to = fields.Nested(AddressSchema, load_default=None, allow_none=True)
    # Required unless the message names a template (then absent): see _check_whole_message.
    subject = fields.String(
        load_default=None, validate=[validate.Length(min=1, max=998), _no_line_break],
        metadata={"description": "required, unless `template` names a stored template (then absent)"},
    )
    text = fields.String(load_default=None, allow_none=True)
    html = fields.String(load_default=None, allow_none=True)
    template_id = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1))
    variables = fields.Dict(
        keys=fields.String(), load_default=None, allow_none=True,
        metadata={"description": "the variables of `template` (rendered when accepted), or of Mailjet's template_id"},
    )
    template = fields.Nested(
        TemplateRefSchema, load_default=None, allow_none=True,
        metadata={"description": "a stored template (POST /templates); then subject, text and html are absent"},
    )
    attachments = fields.List(fields.Nested(AttachmentSchema), load_default=list)
    headers = fields.Dict(
        keys=fields.String(validate=_header_name),
        values=fields.String(validate=[validate.Length(max=998), _no_line_break]),
        load_default=dict,
    )
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    priority = fields.String(load_default="transactional", validate=validate.OneOf(statuses.PRIORITIES))
    send_at = fields.AwareDateTime(load_default=None, allow_none=True, format="iso", validate=send_at_in_range)

    @validates_schema
    def _check_whole_message(self, data: dict[str, Any], **_: Any) -> None:
        problems: dict[str, list[str]] = {}
        if data.get("template") is not None:
            problems.update({field: [_TEMPLATE_GIVES] for field in ("subject", "text", "html") if data.get(field)
                             is not None})
            if data.get("template_id") is not None:
                problems["template_id"] = ["Mailjet's template_id cannot be combined with a stored template"]
        else:
            if data.get("subject") is None:
                problems["subject"] = ["Missing data for required field."]
            if not (data.get("text") or data.get("html") or data.get("template_id")):
                problems["text"] = ["text, html, template_id or template is required"]
        count = sum(len(data.get(kind) or []) for kind in ("to", "cc", "bcc"))
        if count > rules.MAX_RECIPIENTS:
            problems["to"] = [f"{count} recipients in all; at most {rules.MAX_RECIPIENTS} (to + cc + bcc)"]
        size = sum(len(item["content"]) * 3 // 4 for item in data.get("attachments") or [])
        if size > rules.MAX_ATTACHMENTS_BYTES:
            problems["attachments"] = [f"attachments total {size} bytes; at most {rules.MAX_ATTACHMENTS_BYTES}"]
        metadata = data.get("metadata") or {}
        if len(json.dumps(metadata)) > rules.MAX_METADATA_BYTES:
            problems["metadata"] = [f"at most {rules.MAX_METADATA_BYTES} bytes of JSON"]
        if problems:
            raise ValidationError(problems)


class BatchSchema(StrictSchema):
    """A batch of POST /queue."""

    messages = fields.List(
        fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1, max=rules.MAX_BATCH)
    )


class SuppressionSchema(StrictSchema):
    """The body of POST /suppressions."""

    email = fields.Email(required=True, validate=validate.Length(max=254))
    reason = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=200), _no_line_break])
    scope = fields.String(load_default="all", validate=validate.OneOf(("all", "bulk")),
                          metadata={"description": "all: every message; bulk: the app's bulk mail only"})


class SuppressionListArgs(StrictSchema):
    """The query of GET /suppressions."""

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None, validate=validate.Length(min=1, max=1000))
    email = fields.Email(load_default=None, validate=validate.Length(max=254))


def _webhook_events(value: list[str]) -> None:
    allowed = (webhook_rules.ALL_EVENTS, *webhook_rules.EVENT_NAMES)
    unknown = [name for name in value if name not in allowed]
    if unknown:
        raise ValidationError(f"unknown event {', '.join(map(repr, unknown))}; use {', '.join(allowed)}")


class _JSONBoolean(fields.Boolean):
    """JSON true or false only: not "yes", not 1."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class WebhookSchema(StrictSchema):
    """The body of POST /webhooks."""

    url = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    events = fields.List(
        fields.String(), load_default=lambda: [webhook_rules.ALL_EVENTS],
        validate=[validate.Length(min=1, max=webhook_rules.MAX_EVENTS), _webhook_events],
    )


class WebhookPatchSchema(StrictSchema):
    """The body of PATCH /webhooks/{id}: any of url, events, enabled."""

    url = fields.String(validate=validate.Length(min=1, max=2048))
    events = fields.List(
        fields.String(), validate=[validate.Length(min=1, max=webhook_rules.MAX_EVENTS), _webhook_events]
    )
    enabled = _JSONBoolean()


class WebhookDeliveryListArgs(StrictSchema):
    """The query of GET /webhooks/{id}/deliveries."""

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**63 - 1))
    status = fields.String(load_default=None, validate=validate.OneOf(webhook_rules.DELIVERY_STATUSES))


# --- GET /logs and GET /stats ---

_DAY = re.compile(r"\A\d{4}-\d{2}-\d{2}\Z", re.ASCII)
# RFC 3339 with an offset. A '+' that arrived unencoded in a query string reads as a space: take it as '+'.
_INSTANT = re.compile(r"\A(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+ -]\d{2}:\d{2})\Z", re.ASCII)
LOG_LIMIT_DEFAULT = 50
LOG_LIMIT_MAX = 1000
METADATA_PREFIX = "metadata."
MAX_METADATA_FILTERS = 20
MAX_METADATA_FILTER_LENGTH = 1000


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL")


class UtcDay(fields.Field):
    """A UTC day, YYYY-MM-DD."""

    default_error_messages = {"invalid": "must be a date, YYYY-MM-DD"}  # noqa: RUF012  # marshmallow's API

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if not isinstance(value, str) or not _DAY.match(value):
            raise self.make_error("invalid")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise self.make_error("invalid") from None


class DayOrInstant(fields.Field):
    """A UTC day (YYYY-MM-DD) or an instant (RFC 3339 with offset, returned in UTC)."""

    default_error_messages = {  # noqa: RUF012  # marshmallow's API
        "invalid": "must be a date (YYYY-MM-DD) or an RFC 3339 time with offset (2026-11-22T09:00:00Z)"
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date | dt.datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if _DAY.match(value):
            return UtcDay()._deserialize(value, attr, data)
        match = _INSTANT.match(value)
        if not match:
            raise self.make_error("invalid")
        day, time, fraction, offset = match[1], match[2], (match[3] or "")[:7], match[4].upper()
        offset = "+00:00" if offset == "Z" else offset.replace(" ", "+")
        try:
            return dt.datetime.fromisoformat(f"{day}T{time}{fraction}{offset}").astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise self.make_error("invalid") from None


class LogCursor(fields.Field):
    """The opaque next_cursor of an earlier page: (created_at, id) of the last job seen."""

    default_error_messages = {"invalid": "is not a cursor from this API"}  # noqa: RUF012  # marshmallow's API

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[dt.datetime, Any]:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return log_rules.decode_cursor(value)
        except ValueError:
            raise self.make_error("invalid") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _json_depth_limit() -> int:
    """MAILER_MAX_JSON_DEPTH of the app serving the request (its default outside one)."""
    if flask.has_app_context():
        return int(flask.current_app.extensions["mailer.settings"].max_json_depth)
    return Settings.max_json_depth


def _metadata_value(raw: str) -> Any:
    """A metadata filter value: JSON when it parses as JSON (1001, true, "1001", {"a": 1}), else the text."""
    limit = _json_depth_limit()
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
        json_depth.check(raw.encode(), value, limit)
    except (json_depth.TooDeep, RecursionError):  # RecursionError: deeper than Python's limit, so than ours
        raise ValidationError(f"nests deeper than {limit} levels ({json_depth.VARIABLE})") from None
    except ValueError:
        value = raw
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValidationError("is not a finite number") from None
    if "\\u0000" in text:
        raise ValidationError("must not contain NUL")
    return value


def _start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


class LogsArgs(StrictSchema):
    """The query of GET /logs. Every `metadata.KEY=VALUE` parameter is gathered into `metadata`."""

    limit = fields.Integer(
        load_default=LOG_LIMIT_DEFAULT, strict=False, validate=validate.Range(min=1, max=LOG_LIMIT_MAX)
    )
    cursor = LogCursor(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(statuses.JOB_STATUSES))
    recipient = fields.String(load_default=None, validate=[validate.Length(min=1, max=254), _no_nul])
    since = DayOrInstant(load_default=None)
    until = DayOrInstant(load_default=None)
    metadata = fields.Dict(keys=fields.String(), load_default=None)

    @pre_load
    def _gather_metadata(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "metadata" in data:
            raise ValidationError({"metadata": [f"filter on a key with {METADATA_PREFIX}KEY=VALUE"]})
        plain = {key: value for key, value in data.items() if not key.startswith(METADATA_PREFIX)}
        wanted = {key: value for key, value in data.items() if key.startswith(METADATA_PREFIX)}
        if not wanted:
            return plain
        problems: dict[str, list[str]] = {}
        metadata: dict[str, Any] = {}
        if len(wanted) > MAX_METADATA_FILTERS:
            problems["metadata"] = [f"at most {MAX_METADATA_FILTERS} metadata filters"]
        for param, raw in wanted.items():
            key = param.removeprefix(METADATA_PREFIX)
            if not key or "\x00" in key:
                problems[param] = [f"give a key: {METADATA_PREFIX}KEY=VALUE"]
            elif len(raw) > MAX_METADATA_FILTER_LENGTH:
                problems[param] = [f"at most {MAX_METADATA_FILTER_LENGTH} characters"]
            else:
                try:
                    metadata[key] = _metadata_value(raw)
                except ValidationError as exc:
                    problems[param] = exc.messages  # type: ignore[assignment]
        if problems:
            raise ValidationError(problems)
        return {**plain, "metadata": metadata}

    @post_load
    def _bounds(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """since and until as instants; a day `since` starts at its midnight, a day `until` includes it."""
        since, until = data["since"], data["until"]
        if isinstance(since, dt.date) and not isinstance(since, dt.datetime):
            since = _start_of(since)
        if isinstance(until, dt.date) and not isinstance(until, dt.datetime):
            try:
                until = _start_of(until) + dt.timedelta(days=1)
            except OverflowError:  # 9999-12-31: no end
                until = None
        if since is not None and until is not None and since >= until:
            raise ValidationError({"since": ["must be before until"], "until": ["must be after since"]})
        return {**data, "since": since, "until": until}


class StatsArgs(StrictSchema):
    """The query of GET /stats: UTC days, both included; the last 14 days by default."""

    since = UtcDay(load_default=None)
    until = UtcDay(load_default=None)

    @post_load
    def _range(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        until = data["until"] or dt.datetime.now(dt.UTC).date()
        try:
            since = data["since"] or until - dt.timedelta(days=log_rules.STATS_DEFAULT_DAYS - 1)
        except OverflowError:
            since = dt.date.min
        if since > until:
            raise ValidationError({"since": ["must not be after until"], "until": ["must not be before since"]})
        if (until - since).days + 1 > log_rules.STATS_MAX_DAYS:
            raise ValidationError({"since": [f"at most {log_rules.STATS_MAX_DAYS} days from since to until"]})
        return {"since": since, "until": until}
