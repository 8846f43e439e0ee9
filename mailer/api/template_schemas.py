"""Request and response schemas of /templates (marshmallow): they validate, and they are the documentation."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from mailer.api.schemas import StrictSchema
from mailer.services import templates as template_rules

MAX_CURSOR = 200  # ours are about 100 characters
_VERSION = validate.Range(min=1, max=2**31 - 1)


class TemplateSourceSchema(StrictSchema):
    """POST /templates/{id}/versions: one version's content (Jinja2; see the README, "Template language")."""

    subject = fields.String(required=True, validate=validate.Length(min=1))
    html = fields.String(load_default=None, allow_none=True)
    text = fields.String(load_default=None, allow_none=True)
    variables = fields.Dict(
        keys=fields.String(), load_default=None, allow_none=True,
        metadata={"description": "a JSON Schema (draft 2020-12 unless `$schema` says otherwise) of the variables"},
    )

    @validates_schema
    def _has_body(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("html") is None and data.get("text") is None:
            raise ValidationError({"html": ["html or text is required"], "text": ["html or text is required"]})


class TemplateCreateSchema(TemplateSourceSchema):
    """POST /templates: a name and the content of version 1."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=template_rules.MAX_NAME))


class TemplatePatchSchema(StrictSchema):
    """PATCH /templates/{id}: the version messages use when they name none."""

    active_version = fields.Integer(required=True, strict=True, validate=_VERSION)


class TemplateRenderSchema(StrictSchema):
    """POST /templates/{id}/render: a preview with these variables (of the active version unless `version`)."""

    variables = fields.Dict(keys=fields.String(), load_default=dict)
    version = fields.Integer(load_default=None, allow_none=True, strict=True, validate=_VERSION)


class TemplateListArgs(StrictSchema):
    """GET /templates query string."""

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None, validate=validate.Length(min=1, max=MAX_CURSOR))


# --- responses ---


class TemplateCreatedSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    version = fields.Integer(required=True, metadata={"description": "the version just created"})
    active_version = fields.Integer(required=True)


class TemplateSummarySchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    active_version = fields.Integer(required=True, metadata={"description": "the version messages use by default"})
    latest_version = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class TemplateVersionAddedSchema(TemplateSummarySchema):
    version = fields.Integer(required=True, metadata={"description": "the version just created"})


class TemplateVersionSchema(Schema):
    version = fields.Integer(required=True)
    subject = fields.String(required=True, allow_none=True)
    html = fields.String(required=True, allow_none=True)
    text = fields.String(required=True, allow_none=True)
    variables = fields.Dict(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)


class TemplateWithVersionsSchema(TemplateSummarySchema):
    versions = fields.List(fields.Nested(TemplateVersionSchema), required=True,
                           metadata={"description": "every version, oldest first; versions never change"})


class TemplatePageSchema(Schema):
    items = fields.List(fields.Nested(TemplateSummarySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class RenderedSchema(Schema):
    subject = fields.String(required=True, allow_none=True)
    html = fields.String(required=True, allow_none=True)
    text = fields.String(required=True, allow_none=True)

