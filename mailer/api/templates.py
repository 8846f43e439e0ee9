"""/templates: stored templates, their immutable versions, the active one, and a preview."""

from __future__ import annotations

import uuid
from typing import Any

import flask
from marshmallow import Schema

from mailer import db
from mailer.api import apidoc, auth, body, cursors
from mailer.api import errors as api_errors
from mailer.api import template_schemas as ts
from mailer.config import Settings
from mailer.services import templates

bp = flask.Blueprint("templates", __name__)
bp.before_request(auth.require_app_key)

_ID = {"template_id": apidoc.UUID}
_SOURCE_FIELDS = ("subject", "html", "text", "variables")


def _load(schema: Schema, data: Any, what: str) -> dict[str, Any]:
    return api_errors.load_or_422(schema, data, f"the {what} is not valid")


def _template_id(raw: str) -> uuid.UUID:
    return api_errors.id_or_404(raw, "template")


def _pool() -> Any:
    return flask.current_app.extensions["mailer.pool"]


def _settings() -> Settings:
    return flask.current_app.extensions["mailer.settings"]  # type: ignore[no-any-return]


@bp.post("/templates")
@apidoc.operation(body=ts.TemplateCreateSchema, responses={201: ts.TemplateCreatedSchema})
def create_template() -> tuple[flask.Response, int]:
    """Store a template as its version 1 (422 naming the field and line when it does not parse)."""
    loaded = _load(ts.TemplateCreateSchema(), body.json_body(), "template")
    source = {field: loaded[field] for field in _SOURCE_FIELDS}
    with db.connection(_pool()) as conn:
        created = templates.create(
            conn, app_id=auth.current_app_id(), name=loaded["name"], source=source, settings=_settings()
        )
    return flask.jsonify(created), 201


@bp.post("/templates/<template_id>/versions")
@apidoc.operation(
    body=ts.TemplateSourceSchema, responses={201: ts.TemplateVersionAddedSchema}, path=_ID, errors=(404,)
)
def add_template_version(template_id: str) -> tuple[flask.Response, int]:
    """Add the next version (the active one does not change: PATCH chooses it)."""
    loaded = _load(ts.TemplateSourceSchema(), body.json_body(), "template version")
    with db.connection(_pool()) as conn:
        added = templates.add_version(
            conn, app_id=auth.current_app_id(), template_id=_template_id(template_id), source=loaded,
            settings=_settings(),
        )
    return flask.jsonify(added), 201


@bp.get("/templates")
@apidoc.operation(query=ts.TemplateListArgs, responses={200: ts.TemplatePageSchema})
def list_templates() -> flask.Response:
    """The app's templates, newest first, a page at a time (`next_cursor` pages on)."""
    query = _load(ts.TemplateListArgs(), flask.request.args.to_dict(), "query")
    after = cursors.decode(query["cursor"]) if query["cursor"] else None
    with db.connection(_pool()) as conn:
        items, last = templates.list_page(conn, app_id=auth.current_app_id(), after=after, limit=query["limit"])
    return flask.jsonify({"items": items, "next_cursor": cursors.encode(last) if last else None})


@bp.get("/templates/<template_id>")
@apidoc.operation(responses={200: ts.TemplateWithVersionsSchema}, path=_ID, errors=(404,))
def get_template(template_id: str) -> flask.Response:
    """One template with every version, oldest first."""
    with db.snapshot(_pool()) as conn:  # the template and its versions as of one moment
        shown = templates.get_with_versions(conn, app_id=auth.current_app_id(), template_id=_template_id(template_id))
    return flask.jsonify(shown)


@bp.patch("/templates/<template_id>")
@apidoc.operation(body=ts.TemplatePatchSchema, responses={200: ts.TemplateSummarySchema}, path=_ID, errors=(404,))
def patch_template(template_id: str) -> flask.Response:
    """Choose the active version: the one messages use when they name no version (422 if it does not exist)."""
    loaded = _load(ts.TemplatePatchSchema(), body.json_body(), "request")
    with db.connection(_pool()) as conn:
        updated = templates.set_active_version(
            conn, app_id=auth.current_app_id(), template_id=_template_id(template_id),
            version=loaded["active_version"],
        )
    return flask.jsonify(updated)


@bp.delete("/templates/<template_id>")
@apidoc.operation(responses={204: None}, path=_ID, errors=(404, 409))
def delete_template(template_id: str) -> tuple[str, int]:
    """Delete a template: 204; 409 while an active schedule uses it. Jobs rendered from it are unchanged."""
    with db.connection(_pool()) as conn:
        templates.delete(conn, app_id=auth.current_app_id(), template_id=_template_id(template_id))
    return "", 204


@bp.post("/templates/<template_id>/render")
@apidoc.operation(body=ts.TemplateRenderSchema, responses={200: ts.RenderedSchema}, path=_ID, errors=(404,))
def render_template(template_id: str) -> flask.Response:
    """A preview: the subject, html and text a message with these variables would carry; nothing is stored."""
    loaded = _load(ts.TemplateRenderSchema(), body.json_body(), "request")
    with db.connection(_pool()) as conn:
        rendered = templates.preview(
            conn, app_id=auth.current_app_id(), template_id=_template_id(template_id), version=loaded["version"],
            variables=loaded["variables"], settings=_settings(),
        )
    return flask.jsonify(rendered)

