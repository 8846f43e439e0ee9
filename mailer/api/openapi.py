"""GET /openapi.json and GET /docs: the OpenAPI 3 document, built from the routes and their schemas.

apispec's MarshmallowPlugin turns the request schemas (the ones that validate) and the response schemas
(`responses.py`) into components; each route contributes what its `@apidoc.operation` mark says.
"""

from __future__ import annotations

import collections
import importlib.metadata
import inspect
import re
from typing import Any

import flask
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_instance
from werkzeug.routing import Rule

from mailer.api import apidoc, docs_page, responses, schedule_schemas, schemas

bp = flask.Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"
ERROR_REF = "#/components/schemas/Error"
_EXTENSION = "mailer.openapi"
_RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "default": {"type": "string"},
    "string": {"type": "string"},
    "path": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
}
ERRORS = {
    400: "The body is not JSON, or nests deeper than MAILER_MAX_JSON_DEPTH (malformed_request).",
    401: "Missing or bad credentials (unauthorized).",
    404: "No such id for this app, or a template it does not have named in a message, or no such route (not_found).",
    409: "The state does not allow it (conflict).",
    413: "The body is larger than MAILER_MAX_BODY_BYTES (payload_too_large).",
    422: "Validation failed; `details` names each bad field (validation_error).",
    429: "Over the app's request rate limit (rate_limited); retry after `Retry-After` seconds.",
    503: "The database is unavailable (database_unavailable); retry shortly.",
}
DESCRIPTION = """The one service every internal app uses to send email.

Every endpoint needs `Authorization: Bearer <api key>` except `/events` (Mailjet's callback, HTTP basic auth
from `MAILER_EVENTS_AUTH`) and the operational ones: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and
`/docs`. An app sees only its own jobs, schedules, webhooks and suppressions: another app's id is 404.
Every error has one shape, the `Error` schema. `/metrics` is meant for the Prometheus of the operators:
do not expose it to the public internet.
"""


def _schema_name(schema: Any) -> str:
    """Component name: the class name without `Schema`, plus what an instance leaves out."""
    instance = resolve_schema_instance(schema)
    name = type(instance).__name__.removesuffix("Schema")
    if instance.exclude:
        name += "Without" + "".join(part.title() for field in sorted(instance.exclude) for part in field.split("_"))
    return name


def build(app: flask.Flask) -> dict[str, Any]:
    """The OpenAPI document of every route of `app` that is marked with `@apidoc.operation`."""
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(
        title="mailer", version=_version(), openapi_version=OPENAPI_VERSION, plugins=[plugin],
        info={"description": DESCRIPTION},
    )
    # Fields of our own, as the strings they read.
    plugin.map_to_openapi_type(schemas.UtcDay, "string", "date")
    for field in (schemas.DayOrInstant, schemas.LogCursor, schedule_schemas.LocalDateTime):
        plugin.map_to_openapi_type(field, "string", None)
    plugin.converter.add_attribute_function(_ecma_pattern)  # type: ignore[union-attr]  # set by APISpec()
    spec.components.schema("Error", schema=responses.ErrorSchema)
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "description": "An app's API key (`mailer apps create NAME`).",
    })
    spec.components.security_scheme("mailjetBasic", {
        "type": "http", "scheme": "basic", "description": "The `user:password` of MAILER_EVENTS_AUTH (Mailjet's).",
    })
    paths: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        described = apidoc.operation_of(app.view_functions[rule.endpoint])
        if described is None:
            continue
        path, parameters = _path(rule, described)
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        for method in methods:
            operation_id = rule.endpoint if len(methods) == 1 else f"{rule.endpoint}.{method.lower()}"
            paths[path][method.lower()] = _operation(
                app.view_functions[rule.endpoint], described, parameters, operation_id
            )
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _ecma_pattern(converter: Any, field: Any, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """A Python regex anchored with \\A and \\Z as JSON Schema (ECMA 262) reads it: ^ and $ (no multiline)."""
    pattern = ret.get("pattern")
    return {"pattern": pattern.replace("\\A", "^").replace("\\Z", "$")} if pattern else {}


def document(app: flask.Flask) -> dict[str, Any]:
    """The app's document, built once (the routes do not change after create_app)."""
    if _EXTENSION not in app.extensions:
        app.extensions[_EXTENSION] = build(app)
    return app.extensions[_EXTENSION]  # type: ignore[no-any-return]


def _version() -> str:
    try:
        return importlib.metadata.version("mailer")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _path(rule: Rule, described: apidoc.Operation) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path of a Flask rule (`/queue/<job_id>` -> `/queue/{job_id}`) and its path parameters."""
    parameters = []
    for match in _RULE_ARGUMENT.finditer(rule.rule):
        name = match["name"]
        schema = dict(described.path.get(name) or _CONVERTER_SCHEMAS.get(match["converter"] or "default", {}))
        parameters.append({"in": "path", "name": name, "required": True, "schema": schema})
    return _RULE_ARGUMENT.sub(lambda match: "{" + match["name"] + "}", rule.rule), parameters


def _operation(
    view: Any, described: apidoc.Operation, path_parameters: list[dict[str, Any]], operation_id: str
) -> dict[str, Any]:
    summary, _, rest = (inspect.getdoc(view) or "").partition("\n")
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary.strip(),
        "tags": [operation_id.split(".", 1)[0]],
        "security": {"bearer": [{"bearerAuth": []}], "basic": [{"mailjetBasic": []}], "none": []}[described.auth],
        "responses": _responses(described),
    }
    description = described.description or rest.strip()
    if description:
        operation["description"] = description
    parameters = list(path_parameters)
    if described.query is not None:
        parameters.append({"in": "query", "schema": described.query})
    parameters.extend(dict(header, **{"in": "header"}) for header in described.headers)
    if parameters:
        operation["parameters"] = parameters
    if described.body is not None:
        content = {"application/json": {"schema": _one_of(described.body)}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _one_of(schema: Any) -> Any:
    """A schema, or `oneOf` several given as a list or tuple."""
    return {"oneOf": list(schema)} if isinstance(schema, list | tuple) else schema


def _responses(described: apidoc.Operation) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, schema in sorted(described.responses.items()):
        answer: dict[str, Any] = {"description": _SUCCESS.get(status, "Success.")}
        if isinstance(schema, apidoc.Content):
            answer["content"] = {schema.media_type: {"schema": dict(schema.schema)}}
        elif schema is not None:
            answer["content"] = {"application/json": {"schema": _one_of(schema)}}
        answers[str(status)] = answer
    for status in sorted(_error_statuses(described)):
        answer = {"description": ERRORS[status], "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}
        if status == 429:
            answer["headers"] = {"Retry-After": {"description": "whole seconds", "schema": {"type": "integer"}}}
        answers[str(status)] = answer
    return answers


_SUCCESS = {200: "OK.", 201: "Created.", 202: "Accepted.", 204: "Done; no body."}


def _error_statuses(described: apidoc.Operation) -> set[int]:
    statuses = set(described.errors)
    if described.auth != "none":
        statuses.add(401)
    if described.auth == "bearer":
        statuses.add(429)
    if described.body is not None:
        statuses |= {400, 413, 422}
    if described.query is not None:
        statuses.add(422)
    if described.database:
        statuses.add(503)
    return statuses


@bp.get("/openapi.json")
@apidoc.operation(responses={200: apidoc.Content("application/json", {"type": "object"})}, auth="none",
                  database=False)
def openapi_json() -> flask.Response:
    """This document (OpenAPI 3)."""
    return flask.jsonify(document(flask.current_app))


@bp.get("/docs")
@apidoc.operation(responses={200: apidoc.Content("text/html")}, auth="none", database=False)
def docs() -> flask.Response:
    """The document as a page: every path, its operations, parameters and schemas."""
    return flask.Response(docs_page.render(document(flask.current_app)), mimetype="text/html")
