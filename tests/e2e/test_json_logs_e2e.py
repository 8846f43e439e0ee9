"""Real gunicorn and worker processes write JSON lines, and one request id ties an email's API call,
its sending and its webhook together; no key, secret or message content reaches their logs."""

from __future__ import annotations

import json
import pathlib

import pytest
import requests

from tests.conftest import EVENTS_AUTH
from tests.e2e.conftest import running_system, wait_until
from tests.webhook_receiver import running_receiver

pytestmark = pytest.mark.e2e


def lines_of(path: pathlib.Path) -> list[dict]:
    """Every line of a process's output, each parsed as JSON (a line that is not fails the test)."""
    parsed = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{path.name} has a line that is not JSON: {line[:300]}")
    return parsed


def test_one_request_id_from_the_api_call_to_the_worker_and_the_webhook(database_url: str, tmp_path: pathlib.Path):
    with running_receiver() as receiver, running_system(
        database_url, tmp_path, MAILER_WEBHOOK_ALLOW_PRIVATE="1", MAILER_OPERATOR_TOKEN="e2e-operator-token-0123456789",
    ) as system:
        created = requests.post(f"{system.web_url}/webhooks", json={"url": receiver.url("/hook"), "events": ["sent"]},
                                headers=system.auth, timeout=5)
        assert created.status_code == 201, created.text
        queued = requests.post(
            f"{system.web_url}/queue",
            json={"from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}],
                  "subject": "Private subject 51ab", "text": "Private text 62bc", "html": "<b>Private html 73cd</b>"},
            headers={**system.auth, "X-Request-Id": "e2e-trace-1"}, timeout=5,
        )
        assert queued.status_code == 202, queued.text
        assert queued.headers["X-Request-Id"] == "e2e-trace-1"
        job_id = queued.json()["id"]
        receiver.wait_for(1, timeout=30)

        def delivery_logged() -> bool:  # (a line may be half written yet: no parsing here)
            return '"logger":"mailer.services.webhook_delivery"' in (tmp_path / "worker.log").read_text()

        wait_until(delivery_logged, 10, message="the webhook delivery logged")

    web, worker = lines_of(tmp_path / "web.log"), lines_of(tmp_path / "worker.log")
    assert {"time", "level", "logger", "message"} <= set(web[0])
    traced = [line for line in web + worker if line.get("request_id") == "e2e-trace-1"]
    steps = [(line["logger"], line["message"]) for line in traced]
    assert ("mailer.request", "POST /queue 202") in steps
    assert [message for logger, message in steps if logger == "mailer.services.sending"] == ["job sending", "job sent"]
    [delivery] = [line for line in traced if line["logger"] == "mailer.services.webhook_delivery"]
    assert delivery["job_id"] == job_id and delivery["status"] == "succeeded"
    assert not any(line["logger"] == "gunicorn.access" for line in web)  # the app's own line replaces it

    output = (tmp_path / "web.log").read_text() + (tmp_path / "worker.log").read_text()
    never = (system.api_key, created.json()["secret"], EVENTS_AUTH, "e2e-operator-token-0123456789", "e2e-secret",
             receiver.url("/hook"), "Private subject 51ab", "Private text 62bc", "Private html 73cd")
    for secret in never:
        assert secret not in output, secret
