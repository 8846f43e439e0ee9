"""Every writer's recipient status changes reach GET /activity once each, with the body its webhook has:
the sender (sent, failed, suppressed), Mailjet's events through the POST /events path (test mode posts them
there), and the suppressions they add."""

from __future__ import annotations

import collections

import psycopg
import pytest

from mailer.services import apps
from tests.integration.sending_support import message, run_sender
from tests.integration.test_activity_api import walk
from tests.integration.webhooks_support import register

URL = "https://93.184.215.14/hook/"  # never called: deliveries are only queued here
DOMAIN = "simulator.mailer.test"


@pytest.fixture
def test_auth(conn: psycopg.Connection) -> dict[str, str]:
    _, key = apps.create_app(conn, "sandbox", test=True)
    return {"Authorization": f"Bearer {key}"}


def _comparable(data: dict) -> str:
    """The data of a change, but for the time of a change no Mailjet event made (each writes its own clock)."""
    event = data["event"] if "mailjet_event" in data["event"] else {**data["event"], "at": None}
    return repr(sorted({**data, "event": sorted(event.items())}.items()))


def test_the_feed_holds_each_change_a_webhook_reports_once_with_the_same_body(conn, client, test_auth, settings):
    register(client, test_auth, URL)  # so that every change has a webhook message to compare with
    for local in ("clicked", "bounced", "deferred", "blocked", "spam", "unsubscribed"):
        client.post("/queue", json=message(f"{local}@{DOMAIN}"), headers=test_auth)
    failing = message("ann@example.org")
    failing["to"].append({"email": f"rejected@{DOMAIN}"})
    client.post("/queue", json=failing, headers=test_auth)
    run_sender(settings)
    client.post("/queue", json=message(f"bounced@{DOMAIN}"), headers=test_auth)  # suppressed by the bounce
    run_sender(settings)

    items, _ = walk(client, test_auth)
    webhooks = [row[0] for row in conn.execute("SELECT body FROM webhook_messages ORDER BY created_at, id")]

    types = collections.Counter(item["type"] for item in items)
    assert set(types) == {"email.sent", "email.delivered", "email.opened", "email.clicked", "email.bounced",
                          "email.deferred", "email.blocked", "email.spam", "email.unsubscribed", "email.failed",
                          "email.suppressed"}
    assert len(items) == len(webhooks) == sum(types.values())
    feed = sorted((item["data"]["recipient"], item["type"], _comparable(item["data"])) for item in items)
    sent = sorted((body["data"]["recipient"], body["type"], _comparable(body["data"])) for body in webhooks)
    assert feed == sent  # the same changes, each once, and the same data (Mailjet's event detail included)
    for recipient in {item["data"]["recipient"] for item in items}:  # each recipient's changes in their order
        assert [i["type"] for i in items if i["data"]["recipient"] == recipient] == [
            b["type"] for b in webhooks if b["data"]["recipient"] == recipient]
