"""Structured logs: the request id follows a job from the API call through the sender into its webhook
deliveries, and no line ever holds a key, a secret, a password or any part of a message."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Iterator

import psycopg
import pytest

from mailer import create_app, db, logging_json
from mailer.config import Settings
from mailer.services import webhook_delivery
from tests.conftest import EVENTS_AUTH
from tests.integration.conftest import make_key
from tests.integration.sending_support import run_sender
from tests.integration.webhooks_support import register
from tests.webhook_receiver import Receiver, running_receiver


class Lines(logging.Handler):
    """Every log line, formatted as the processes write them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging_json.JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def entries(self, **wanted: object) -> list[dict]:
        parsed = [json.loads(line) for line in self.lines]
        return [entry for entry in parsed if all(entry.get(key) == value for key, value in wanted.items())]


@pytest.fixture
def logs() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # every line any library writes, too
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


MESSAGE = {
    "from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}],
    "subject": "Confidential subject line 7c1f", "text": "Secret text body 9d2e",
    "html": "<p>Secret html body 4b8a</p>",
    "attachments": [{"filename": "invoice-5e3d.pdf", "content_type": "application/pdf",
                     "content": base64.b64encode(b"attachment bytes 2a6f").decode()}],
    "headers": {"X-Order": "header value 8f0c"},
}


def test_a_valid_request_id_is_kept_and_returned(client, auth, logs):
    response = client.get("/logs", headers={**auth, "X-Request-Id": "abc.DEF-123_x"})
    assert response.headers["X-Request-Id"] == "abc.DEF-123_x"
    [line] = logs.entries(logger="mailer.request")
    assert line["request_id"] == "abc.DEF-123_x"
    assert line["method"] == "GET" and line["path"] == "/logs" and line["route"] == "/logs"
    assert line["status"] == 200 and isinstance(line["duration_ms"], float) and line["app_id"] > 0


@pytest.mark.parametrize("given", [None, "", "has spaces", "x" * 129, "a;b", "ü"])
def test_a_missing_or_invalid_request_id_is_replaced_by_a_fresh_one(client, given):
    headers = {} if given is None else {"X-Request-Id": given}
    response = client.get("/healthz", headers=headers)
    made = response.headers["X-Request-Id"]
    assert made != given and len(made) == 32 and logging_json.valid_request_id(made)


def test_errors_and_refused_requests_carry_a_request_id_too(client, logs):
    response = client.get("/logs?recipient=ann@example.org", headers={"X-Request-Id": "refused-1"})
    assert response.status_code == 401
    assert response.headers["X-Request-Id"] == "refused-1"
    [line] = logs.entries(logger="mailer.request", request_id="refused-1")
    assert line["status"] == 401 and line["app_id"] is None
    assert line["path"] == "/logs"  # the path only: the query string can hold addresses
    assert "ann@example.org" not in json.dumps(line)


@pytest.mark.parametrize("listed", [True, False], ids=["on the list", "not on the list"])
def test_deleting_a_suppression_logs_the_route_not_the_address(client, auth, logs, listed):
    if listed:
        added = client.post("/suppressions", json={"email": "Private.Person@example.org"}, headers=auth)
        assert added.status_code == 201
    response = client.delete("/suppressions/Private.Person%40example.org", headers=auth)
    assert response.status_code == (204 if listed else 404)
    [line] = logs.entries(logger="mailer.request", method="DELETE")
    assert line["path"] == line["route"] == "/suppressions/<path:email>"
    assert line["message"] == f"DELETE /suppressions/<path:email> {response.status_code}"
    assert not [text for text in logs.lines if "private.person" in text.lower()]


@pytest.mark.parametrize("method", ["GET", "PUT", "POST"])
def test_an_unrouted_request_on_an_address_logs_no_address(client, auth, logs, method):
    response = client.open("/suppressions/Private.Person%40example.org", method=method, headers=auth)
    assert response.status_code == 405
    [line] = logs.entries(logger="mailer.request", method=method)
    assert line["path"] == "/suppressions/<redacted>" and line["route"] is None
    assert not [text for text in logs.lines if "private.person" in text.lower()]


def test_the_request_id_is_stored_with_each_job_of_a_batch(client, auth, conn):
    body = {"messages": [MESSAGE, MESSAGE]}
    response = client.post("/queue", json=body, headers={**auth, "X-Request-Id": "batch-7"})
    assert response.status_code == 202
    ids = [job["id"] for job in response.json["jobs"]]
    stored = conn.execute("SELECT request_id FROM jobs WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
    assert [row[0] for row in stored] == ["batch-7", "batch-7"]


def test_the_request_id_follows_a_job_to_the_sender_and_its_webhooks_and_nothing_secret_is_logged(
    settings: Settings, simulator: str, receiver: Receiver, logs: Lines, conn: psycopg.Connection
):
    settings = dataclasses.replace(
        settings, mailjet_api_url=simulator, mailjet_timeout_s=2.0, webhook_allow_private=True,
        operator_token="operator-token-3f9a8b7c", secret_key="session-key-1d2c3b4a",
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        api_key = make_key(conn, "billing")
        auth = {"Authorization": f"Bearer {api_key}"}
        endpoint = register(client, auth, receiver.url("/hook"), ["sent"])
        response = client.post("/queue", json=MESSAGE, headers={**auth, "X-Request-Id": "trace-42"})
        assert response.status_code == 202
        job_id = response.json["id"]

        assert run_sender(settings).sent == 1
        pool = db.create_pool(settings, name="test-webhooks")
        try:
            [done] = webhook_delivery.deliver_due_batch(pool, settings)
        finally:
            pool.close()
        assert done.status == "succeeded"
        assert receiver.wait_for(1)[0].json["data"]["job_id"] == job_id
        client.get(f"/status/{job_id}", headers=auth)
        client.get(f"/webhooks/{endpoint['id']}/deliveries", headers=auth)
        client.post("/events", json=[], headers={"Authorization": "Basic " + base64.b64encode(
            EVENTS_AUTH.encode()).decode()})
    finally:
        app.extensions["mailer.pool"].close()

    # The API call, then every step of the job, then the webhook: all with the request id.
    [request_line] = logs.entries(logger="mailer.request", path="/queue")
    assert request_line["request_id"] == "trace-42" and request_line["status"] == 202
    steps = [entry["status"] for entry in logs.entries(job_id=job_id) if entry["logger"] != "mailer.request"]
    assert steps[:3] == ["queued", "sending", "sent"]
    assert all(entry["request_id"] == "trace-42" for entry in logs.entries(job_id=job_id))
    [delivery_line] = logs.entries(logger="mailer.services.webhook_delivery", job_id=job_id)
    assert delivery_line["request_id"] == "trace-42"
    assert delivery_line["status"] == "succeeded" and delivery_line["status_code"] == 200
    assert delivery_line["webhook_id"].startswith("msg_") and delivery_line["type"] == "email.sent"

    everything = "\n".join(logs.lines)
    never = [
        api_key, api_key.split("_", 2)[2],  # the secret (mk_<key id>_<secret>; it may hold "_")
        endpoint["secret"], endpoint["secret"].removeprefix("whsec_"),
        EVENTS_AUTH, EVENTS_AUTH.split(":")[1], "operator-token-3f9a8b7c", "session-key-1d2c3b4a",
        settings.mailjet_api_secret, receiver.url("/hook"),
        "Confidential subject line 7c1f", "Secret text body 9d2e", "Secret html body 4b8a", "invoice-5e3d.pdf",
        MESSAGE["attachments"][0]["content"], "attachment bytes 2a6f", "header value 8f0c",
    ]
    assert settings.database_url is not None
    password = psycopg.conninfo.conninfo_to_dict(settings.database_url).get("password")
    if password:
        never.append(str(password))
    leaked = [value for value in never if value and value in everything]
    assert leaked == [], leaked
