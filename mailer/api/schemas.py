"""Request schemas (marshmallow): they validate, and they are the API's documentation."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mailer.domain import message as rules
from mailer.domain import statuses


def _no_line_break(value: str) -> None:
    if rules.has_line_break(value):
        raise ValidationError("must not contain CR or LF")


def _header_name(value: str) -> None:
    if not rules.HEADER_NAME.match(value):
        raise ValidationError("is not a valid header name")
    if value.lower() in rules.FORBIDDEN_HEADERS:
        raise ValidationError(f"{value} cannot be set (Mailjet sets it, or a field of its own does)")


def _send_at_in_range(value: dt.datetime) -> None:
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


class MessageSchema(StrictSchema):
    """One message of POST /queue."""

    from_ = fields.Nested(AddressSchema, required=True, data_key="from")
    to = fields.List(fields.Nested(AddressSchema), required=True, validate=validate.Length(min=1))
    cc = fields.List(fields.Nested(AddressSchema), load_default=list)
    bcc = fields.List(fields.Nested(AddressSchema), load_default=list)
    reply_to = fields.Nested(AddressSchema, load_default=None, allow_none=True)
    subject = fields.String(required=True, validate=[validate.Length(min=1, max=998), _no_line_break])
    text = fields.String(load_default=None, allow_none=True)
    html = fields.String(load_default=None, allow_none=True)
    template_id = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1))
    variables = fields.Dict(keys=fields.String(), load_default=None, allow_none=True)
    attachments = fields.List(fields.Nested(AttachmentSchema), load_default=list)
    headers = fields.Dict(
        keys=fields.String(validate=_header_name),
        values=fields.String(validate=[validate.Length(max=998), _no_line_break]),
        load_default=dict,
    )
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    priority = fields.String(load_default="transactional", validate=validate.OneOf(statuses.PRIORITIES))
    send_at = fields.AwareDateTime(load_default=None, allow_none=True, format="iso", validate=_send_at_in_range)

    @validates_schema
    def _check_whole_message(self, data: dict[str, Any], **_: Any) -> None:
        problems: dict[str, list[str]] = {}
        if not (data.get("text") or data.get("html") or data.get("template_id")):
            problems["text"] = ["text, html or template_id is required"]
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
