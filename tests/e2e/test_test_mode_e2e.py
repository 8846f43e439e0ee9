"""Test mode through real processes: a test app's mail goes through gunicorn and the worker to `sent` and its
events, its webhooks arrive signed, and nothing reaches MAILJET_API_URL."""

from __future__ import annotations

import collections
import contextlib
import http.server
import pathlib
import threading
from collections.abc import Iterator

import psycopg
import pytest
import requests

from mailer.services import apps
from tests.e2e.conftest import running_system, wait_until
from tests.webhook_receiver import running_receiver

pytestmark = pytest.mark.e2e

DOMAIN = "simulator.mailer.test"
# Address -> the webhook types its recipient's story gives, in order.
EXPECTED = {
    f"delivered@{DOMAIN}": ["email.sent", "email.delivered"],
    f"opened@{DOMAIN}": ["email.sent", "email.delivered", "email.opened"],
    f"clicked@{DOMAIN}": ["email.sent", "email.delivered", "email.opened", "email.clicked"],
    f"bounced@{DOMAIN}": ["email.sent", "email.bounced"],
    f"deferred@{DOMAIN}": ["email.sent", "email.deferred"],
    f"blocked@{DOMAIN}": ["email.sent", "email.blocked"],
    f"spam@{DOMAIN}": ["email.sent", "email.delivered", "email.spam"],
    f"unsubscribed@{DOMAIN}": ["email.sent", "email.delivered", "email.opened", "email.unsubscribed"],
    f"rejected@{DOMAIN}": ["email.failed"],
    "ann@example.org": ["email.sent", "email.delivered"],
}


@contextlib.contextmanager
def failing_mailjet() -> Iterator[tuple[str, list[str]]]:
    """A Mailjet stand-in that records every request (any method) and answers 500: its URL, the requests."""
    calls: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            calls.append(f"{self.command} {self.path}")
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any  # the names http.server calls

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_test_apps_mail_goes_through_every_step_but_mailjet(database_url: str, tmp_path: pathlib.Path) -> None:
    with psycopg.connect(database_url) as conn:
        _, key = apps.create_app(conn, "sandbox", test=True)
    auth = {"Authorization": f"Bearer {key}"}
    with running_receiver() as receiver, failing_mailjet() as (mailjet_url, mailjet_calls), running_system(
        database_url, tmp_path, MAILER_WEBHOOK_ALLOW_PRIVATE="1", MAILJET_API_URL=mailjet_url,
    ) as system:
        created = requests.post(f"{system.web_url}/webhooks", json={"url": receiver.url("/hook"), "events": ["*"]},
                                headers=auth, timeout=5)
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        body = {"messages": [
            {"from": {"email": "shop@example.com"}, "to": [{"email": address}], "subject": "Order", "text": "Hi",
             "metadata": {"case": address}}
            for address in EXPECTED
        ]}
        queued = requests.post(f"{system.web_url}/queue", json=body, headers=auth, timeout=5)
        assert queued.status_code == 202, queued.text
        jobs = dict(zip(EXPECTED, (job["id"] for job in queued.json()["jobs"]), strict=True))

        arrived = receiver.wait_for(sum(map(len, EXPECTED.values())), timeout=20)

        stories: dict[str, list[str]] = collections.defaultdict(list)
        for request in sorted(arrived, key=lambda r: r.at):
            delivered = request.verify(secret)
            stories[delivered["data"]["recipient"]].append(delivered["type"])
            assert delivered["data"]["job_id"] == jobs[delivered["data"]["recipient"]]
        assert {address: sorted(types) for address, types in stories.items()} == {
            address: sorted(types) for address, types in EXPECTED.items()}
        opened = requests.get(f"{system.web_url}/status/{jobs[f'opened@{DOMAIN}']}", headers=auth, timeout=5).json()
        assert (opened["status"], opened["test"], opened["recipients"][0]["status"]) == ("sent", True, "opened")
        assert int(opened["recipients"][0]["message_id"]) > 2**53
        rejected = requests.get(f"{system.web_url}/status/{jobs[f'rejected@{DOMAIN}']}", headers=auth,
                                timeout=5).json()
        assert rejected["status"] == "failed" and f"rejected@{DOMAIN}" in rejected["last_error"]
        suppressions = wait_until(lambda: requests.get(f"{system.web_url}/suppressions", headers=auth,
                                                       timeout=5).json()["items"], 5)
        assert sorted(item["email"] for item in suppressions) == [
            f"{local}@{DOMAIN}" for local in ("blocked", "bounced", "spam", "unsubscribed")]
        # GET /stats counts the recipients by milestone (issue 22): every delivered one, the click as an open too.
        totals = requests.get(f"{system.web_url}/stats", headers=auth, timeout=5).json()["totals"]
        assert {kind: totals[kind] for kind in ("sent", "failed", "delivered", "opened", "clicked", "bounced",
                                                "blocked", "spam", "unsubscribed")} == {
            "sent": 9, "failed": 1, "delivered": 6, "opened": 3, "clicked": 1, "bounced": 1, "blocked": 1, "spam": 1,
            "unsubscribed": 1}
        assert totals["rates"]["opened"] == 0.5
        sent_to_simulator = requests.get(f"{system.simulator_url}/_sim/sends", timeout=5).json()["calls"]
    assert mailjet_calls == []  # nothing of the test app ever reached MAILJET_API_URL
    assert sent_to_simulator == 0
