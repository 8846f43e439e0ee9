"""Property-based run of the API against its own OpenAPI document (schemathesis, in-process): no 5xx.

Every operation of /openapi.json gets up to MAX_EXAMPLES generated requests that follow the document and
as many that break it, sent to the Flask app through WSGI with a real API key (Mailjet's basic auth on
/events). A 5xx answer fails the test, and so does an answer that does not match the document's
response schema for its status; the failure lists every operation that had one. One database serves
the whole run, which stays under BUDGET_S.

(schemathesis' own pytest plugin, `schemathesis.pytest.from_fixture`, does not run under pytest 9 yet:
it sets a private attribute pytest no longer has. The operations are walked here instead.)
"""

from __future__ import annotations

import base64
import time

import flask
import hypothesis
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import EVENTS_AUTH

MAX_EXAMPLES = 20
BUDGET_S = 120.0
CHECKS = [not_a_server_error, response_schema_conformance]


def _auth_headers(api_key: str) -> dict[str, dict[str, str]]:
    basic = base64.b64encode(EVENTS_AUTH.encode()).decode()
    return {"bearerAuth": {"Authorization": f"Bearer {api_key}"}, "mailjetBasic": {"Authorization": f"Basic {basic}"}}


def _failures(operation: schemathesis.APIOperation, headers: dict[str, str]) -> list[str]:
    """Run the operation's valid and invalid cases; what went wrong, if anything."""
    failures = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate],
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            pass  # the operation takes nothing that can be made invalid (GET /healthz)
        except Exception as exc:
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


def test_no_generated_request_makes_the_api_answer_5xx(app: flask.Flask, client, api_key: str) -> None:
    documented = sum(len(operations) for operations in client.get("/openapi.json").json["paths"].values())
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    auth = _auth_headers(api_key)
    started = time.monotonic()
    operations, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        security = operation.definition.raw.get("security") or [{}]
        headers = {key: value for requirement in security for name in requirement for key, value in auth[name].items()}
        failures.extend(_failures(operation, headers))
        assert time.monotonic() - started < BUDGET_S, f"over the time budget after {operations} operations"

    assert operations >= documented - 1  # schemathesis leaves out GET /openapi.json, the document itself
    assert failures == [], "\n\n".join(failures)
