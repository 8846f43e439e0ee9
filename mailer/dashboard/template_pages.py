"""/dashboard's templates pages: an app's templates, and one template's versions with a rendered preview.

The routes are added to the dashboard's blueprint (views.bp): its login guard, headers and error pages apply.
"""

from __future__ import annotations

import uuid

import flask
from flask.typing import ResponseReturnValue

from mailer import db
from mailer.api import body, cursors
from mailer.api import errors as api_errors
from mailer.api import template_schemas as ts
from mailer.config import Settings
from mailer.dashboard import views
from mailer.domain import errors
from mailer.services import dashboard, templates

bp = views.bp
TEMPLATES_PER_PAGE = 50


def _settings() -> Settings:
    return flask.current_app.extensions["mailer.settings"]  # type: ignore[no-any-return]


def _template_id(raw: str) -> uuid.UUID:
    return api_errors.id_or_404(raw, "template")


@bp.get("/apps/<int:app_id>/templates")
def template_list(app_id: int) -> str:
    """The app's templates, newest first, a page at a time."""
    views._app(app_id)
    cursor = flask.request.args.get("cursor", "").strip()
    query, problems = views._load(ts.TemplateListArgs(), {"cursor": cursor} if cursor else {})
    after = None
    if query.get("cursor"):
        try:
            after = cursors.decode(query["cursor"])
        except errors.ValidationFailed as exc:
            problems = exc.details
    with db.connection(views._pool()) as conn:
        items, last = templates.list_page(conn, app_id=app_id, after=after, limit=TEMPLATES_PER_PAGE)
    more = views._link(".template_list", app_id, {"cursor": cursors.encode(last)}) if last else None
    return views._render("templates.html", app_id, items=items, problems=problems, more=more)


@bp.get("/apps/<int:app_id>/templates/<template_id>")
def template_page(app_id: int, template_id: str) -> ResponseReturnValue:
    """A template's versions, and a preview of one of them rendered with the variables of the form (the
    schema's first example at first): what POST /templates/{id}/render answers, or its error (422 or 400)."""
    views._app(app_id)
    parsed = _template_id(template_id)
    settings = _settings()
    args = flask.request.args
    failure: errors.MailerError | None = None
    preview = None
    try:
        version = dashboard.preview_version(args.get("version"))
    except errors.ValidationFailed as exc:
        version, failure = None, exc
    with db.snapshot(views._pool()) as conn:  # the template, its versions and the shown one as of one moment
        template, shown = templates.page_of(conn, app_id=app_id, template_id=parsed, version=version)
    typed = args.get("variables")
    variables_text = dashboard.example_variables(shown["variables"]) if typed is None else typed
    # The bound is for what a form sends; the schema's own example (stored, so already bounded) always renders.
    max_bytes = settings.dashboard_preview_max_bytes if typed is not None else len(variables_text.encode()) + 1
    if failure is None:
        try:
            variables = dashboard.preview_variables(variables_text, max_bytes=max_bytes, max_depth=body.max_depth())
            with db.connection(views._pool()) as conn:
                preview = templates.preview(
                    conn, app_id=app_id, template_id=parsed, version=version, variables=variables, settings=settings
                )
        except (errors.ValidationFailed, errors.MalformedRequest) as exc:
            failure = exc
    page = views._render(
        "template.html", app_id, stored=template, shown=shown, version=version, variables_text=variables_text,
        preview=preview, failure=failure,
    )
    return page, failure.http_status if failure else 200
