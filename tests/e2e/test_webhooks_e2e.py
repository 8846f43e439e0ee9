"""Outbound webhooks with real processes: register an endpoint, queue an email, receive its story signed."""

from __future__ import annotations

import pathlib

import pytest
import requests

from tests.e2e.conftest import ROUTES, running_system, wait_until
from tests.webhook_receiver import running_receiver

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("route", ROUTES)
def test_the_worker_delivers_signed_sent_delivered_opened(
    database_url: str, tmp_path: pathlib.Path, route: str, request: pytest.FixtureRequest
) -> None:
    bouncer = request.getfixturevalue("pgbouncer") if route == "pgbouncer" else None
    with running_receiver() as receiver, running_system(
        database_url, tmp_path, bouncer, MAILER_WEBHOOK_ALLOW_PRIVATE="1"
    ) as system:
        created = requests.post(
            f"{system.web_url}/webhooks", json={"url": receiver.url("/mailer"), "events": ["*"]},
            headers=system.auth, timeout=5,
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        queued = requests.post(
            f"{system.web_url}/queue",
            json={"from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Order",
                  "text": "Thanks", "metadata": {"order_id": 1001}},
            headers=system.auth, timeout=5,
        )
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]

        arrived = receiver.wait_for(3, timeout=30)

        bodies = [request.verify(secret) for request in arrived]  # every one signed with the secret
        assert [body["type"] for body in sorted(bodies, key=lambda b: b["timestamp"])] == [
            "email.sent", "email.delivered", "email.opened",
        ]
        assert len({request.headers["webhook-id"] for request in arrived}) == 3
        for body in bodies:
            assert body["data"]["job_id"] == job_id
            assert body["data"]["recipient"] == "ann@example.org"
            assert body["data"]["metadata"] == {"order_id": 1001}
            assert int(body["data"]["message_id"]) > 2**53
        opened = next(body for body in bodies if body["type"] == "email.opened")
        assert opened["data"]["event"]["mailjet_event"] == "open"
        endpoint_id = created.json()["id"]
        url = f"{system.web_url}/webhooks/{endpoint_id}/deliveries"

        def statuses() -> list[str]:
            return [item["status"] for item in requests.get(url, headers=system.auth, timeout=5).json()["items"]]

        wait_until(lambda: statuses() == ["succeeded"] * 3, 10, message="three deliveries recorded as succeeded")
