"""GET /openapi.json and GET /docs: a valid OpenAPI 3 document that covers every route, and a page of it."""

from __future__ import annotations

import re

import flask
from openapi_spec_validator import validate

from mailer.api import openapi

ERROR_REF = "#/components/schemas/Error"
# The operator dashboard is a set of HTML pages for people (session login), not part of the JSON API.
DASHBOARD = "dashboard."


def _api_routes(app: flask.Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route of the app, as the document must name them."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(DASHBOARD):
            continue
        path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
        routes.update((path, method.lower()) for method in (rule.methods or set()) - {"HEAD", "OPTIONS"})
    return routes


def test_the_document_is_valid_openapi_3_and_needs_no_auth(client) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.json
    assert document["openapi"].startswith("3.")
    validate(document)


def test_every_route_of_the_app_is_in_the_document(app, client) -> None:
    document = client.get("/openapi.json").json
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}

    routes = _api_routes(app)

    assert routes - documented == set()
    assert documented - routes == set()
    # The issue's list, so a route lost from the app (and from the document with it) is noticed too.
    for path, method in [
        ("/queue", "post"), ("/queue/{job_id}", "delete"), ("/queue/{job_id}", "patch"),
        ("/queue/{job_id}/retry", "post"), ("/status/{job_id}", "get"), ("/events", "post"),
        ("/suppressions", "get"), ("/suppressions", "post"), ("/suppressions/{email}", "delete"),
        ("/schedules", "post"), ("/schedules/{schedule_id}", "patch"), ("/schedules/{schedule_id}/done", "post"),
        ("/webhooks", "post"), ("/webhooks/{endpoint_id}", "patch"), ("/webhooks/{endpoint_id}/deliveries", "get"),
        ("/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay", "post"),
        ("/webhooks/{endpoint_id}/rotate-secret", "post"), ("/logs", "get"), ("/stats", "get"),
        ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"), ("/openapi.json", "get"), ("/docs", "get"),
    ]:
        assert (path, method) in documented, (path, method)


def test_every_error_response_is_the_shared_error_schema(client) -> None:
    document = client.get("/openapi.json").json
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    body = document["components"]["schemas"][error["properties"]["error"]["$ref"].rsplit("/", 1)[-1]]
    assert set(body["required"]) == {"code", "message", "details"}

    errors = [
        (path, method, status, answer)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if status.startswith(("4", "5"))
    ]

    assert len(errors) > 50
    for path, method, status, answer in errors:
        assert answer["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (path, method, status)
    statuses = {status for *_, status, _ in errors}
    assert {"400", "401", "404", "409", "413", "422", "429", "503"} <= statuses
    queue = document["paths"]["/queue"]["post"]["responses"]
    assert "Retry-After" in queue["429"]["headers"]
    # A message naming a template the app does not have is 404.
    assert "404" in queue and "404" in document["paths"]["/schedules"]["post"]["responses"]
    assert "404" in document["paths"]["/schedules/{schedule_id}"]["patch"]["responses"]


def test_security_schemes_bearer_for_the_api_basic_for_events_none_for_operations(client) -> None:
    document = client.get("/openapi.json").json
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["mailjetBasic"] == {**schemes["mailjetBasic"], "type": "http", "scheme": "basic"}
    paths = document["paths"]

    assert paths["/events"]["post"]["security"] == [{"mailjetBasic": []}]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert paths[path]["get"]["security"] == [], path
    for path in ("/queue", "/logs", "/webhooks", "/suppressions", "/schedules"):
        for operation in paths[path].values():
            assert operation["security"] == [{"bearerAuth": []}], path
            assert "401" in operation["responses"]


def test_request_schemas_are_the_validating_marshmallow_schemas(client) -> None:
    document = client.get("/openapi.json").json
    schemas = document["components"]["schemas"]
    queue_body = document["paths"]["/queue"]["post"]["requestBody"]["content"]["application/json"]["schema"]

    assert queue_body == {"oneOf": [{"$ref": "#/components/schemas/Message"}, {"$ref": "#/components/schemas/Batch"}]}
    message = schemas["Message"]
    assert {"from", "to"} <= set(message["required"])
    # subject is required unless the message names a stored template (issue 21): the schema checks the pair
    assert "subject" not in message["required"] and "template" in message["properties"]["subject"]["description"]
    assert {"$ref": "#/components/schemas/TemplateRef"} in message["properties"]["template"]["anyOf"]
    assert message["additionalProperties"] is False  # unknown fields are refused, as the schema does
    assert message["properties"]["priority"]["enum"] == ["transactional", "bulk"]
    assert schemas["Batch"]["properties"]["messages"]["maxItems"] == 500
    logs_query = {p["name"] for p in document["paths"]["/logs"]["get"]["parameters"]}
    assert logs_query == {"limit", "cursor", "status", "recipient", "since", "until"}
    status = document["paths"]["/status/{job_id}"]["get"]
    assert status["parameters"] == [{"in": "path", "name": "job_id", "required": True,
                                     "schema": {"type": "string", "format": "uuid"}}]
    assert status["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobStatus"
    }


def test_the_document_names_what_the_responses_really_carry(client, auth) -> None:
    document = client.get("/openapi.json").json
    job_status = document["components"]["schemas"]["JobStatus"]
    message = {"from": {"email": "a@example.com"}, "to": [{"email": "b@example.org"}], "subject": "s", "text": "t"}
    job_id = client.post("/queue", json=message, headers=auth).json["id"]

    story = client.get(f"/status/{job_id}", headers=auth).json

    assert set(story) == set(job_status["properties"])
    assert set(job_status["required"]) <= set(story)


def test_docs_page_lists_every_path_without_auth(client) -> None:
    document = client.get("/openapi.json").json

    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<script" not in page  # rendered on the server: nothing to fetch from a CDN
    for path, operations in document["paths"].items():
        assert f'<span class=path>{path}</span>' in page, path
        for operation in operations.values():
            assert f'id="{operation["operationId"]}"' in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page, name
    assert 'href="#schema-Error"' in page
    assert "Idempotency-Key" in page


def test_the_document_is_built_once_per_app(app) -> None:
    with app.app_context():
        assert openapi.document(app) is openapi.document(app)
