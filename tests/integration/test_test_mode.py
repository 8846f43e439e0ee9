"""Test mode: test apps' keys, their sends answered by the sender itself, and the events of each magic address
applied through the path of POST /events (statuses, suppressions, webhooks), with no call to Mailjet."""

from __future__ import annotations

import psycopg
import pytest

from mailer.domain import errors
from mailer.services import apps
from tests.integration.sending_support import message, run_sender, sends
from tests.integration.webhooks_support import deliveries, register

URL = "https://93.184.215.14/hook/"  # never called: deliveries are only queued here
DOMAIN = "simulator.mailer.test"


@pytest.fixture
def test_key(conn: psycopg.Connection) -> str:
    _, key = apps.create_app(conn, "sandbox", test=True)
    return key


@pytest.fixture
def test_auth(test_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {test_key}"}


def test_a_test_key_starts_mk_test_and_never_passes_for_the_other_kind(conn, client, test_key, api_key) -> None:
    assert test_key.startswith("mk_test_")
    assert not api_key.startswith("mk_test_")
    assert apps.authenticate(conn, test_key) > 0
    assert apps.authenticate(conn, api_key) > 0  # both now in the process's cache too
    as_live = "mk_" + test_key.removeprefix("mk_test_")
    as_test = "mk_test_" + api_key.removeprefix("mk_")
    for wrong in (as_live, as_test):
        with pytest.raises(errors.Unauthorized):
            apps.authenticate(conn, wrong)
        assert apps.recall(wrong) is None
        assert client.get("/logs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert client.post("/queue", json=message("ann@example.org"),
                           headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert client.get("/logs", headers={"Authorization": f"Bearer {test_key}"}).status_code == 200
    rotated, new_key = apps.rotate_key(conn, "sandbox")
    assert rotated.test and new_key.startswith("mk_test_")
    assert apps.authenticate(conn, new_key) == rotated.id


def _suppressed(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return [tuple(row) for row in conn.execute("SELECT email, reason FROM suppressions ORDER BY email")]


# Local part -> (recipient status, webhook types in order, suppression reason or None).
MAGIC = {
    "delivered": ("delivered", ["email.sent", "email.delivered"], None),
    "opened": ("opened", ["email.sent", "email.delivered", "email.opened"], None),
    "clicked": ("clicked", ["email.sent", "email.delivered", "email.opened", "email.clicked"], None),
    "bounced": ("bounced", ["email.sent", "email.bounced"], "bounce"),
    "deferred": ("deferred", ["email.sent", "email.deferred"], None),
    "blocked": ("blocked", ["email.sent", "email.blocked"], "blocked"),
    "spam": ("spam", ["email.sent", "email.delivered", "email.spam"], "spam"),
    "unsubscribed": ("unsubscribed", ["email.sent", "email.delivered", "email.opened", "email.unsubscribed"],
                     "unsub"),
}
# The Mailjet events behind each recipient status in a timeline (as /status shows them).
TIMELINE = {"delivered": ["delivered"], "opened": ["delivered", "opened"],
            "clicked": ["delivered", "opened", "clicked"], "bounced": ["bounced"], "deferred": ["deferred"],
            "blocked": ["blocked"], "spam": ["delivered", "spam"],
            "unsubscribed": ["delivered", "opened", "unsubscribed"]}


@pytest.mark.parametrize("local", sorted(MAGIC))
def test_each_magic_address_gets_the_events_mailjet_would_post(conn, client, test_auth, settings, local) -> None:
    # settings: Mailjet at an address nothing listens on; a call would fail the send and requeue the job.
    register(client, test_auth, URL)
    address = f"{local}@{DOMAIN}"
    job_id = client.post("/queue", json=message(address), headers=test_auth).json["id"]

    outcome = run_sender(settings)

    assert (outcome.claimed, outcome.sent, outcome.retried) == (1, 1, 0)
    story = client.get(f"/status/{job_id}", headers=test_auth).json
    status, types, reason = MAGIC[local]
    assert story["status"] == "sent" and story["test"] is True
    [recipient] = story["recipients"]
    assert recipient["status"] == status
    assert 2**53 < int(recipient["message_id"]) < 2**63
    assert [event["type"] for event in recipient["events"]] == TIMELINE[local]
    assert [kind for _, kind, _ in deliveries(conn)] == types
    assert _suppressed(conn) == ([(address, reason)] if reason else [])
    events = conn.execute("SELECT name, custom_id, applied_at IS NOT NULL FROM mailjet_events ORDER BY id").fetchall()
    assert all(custom_id == job_id and applied for _, custom_id, applied in events)


def test_rejected_fails_the_job_with_a_mailjet_error_naming_the_recipient(conn, client, test_auth, settings) -> None:
    register(client, test_auth, URL)
    address = f"rejected@{DOMAIN}"
    body = message("ann@example.org")
    body["to"].append({"email": address})
    job_id = client.post("/queue", json=body, headers=test_auth).json["id"]

    outcome = run_sender(settings)

    assert (outcome.claimed, outcome.failed, outcome.retried) == (1, 1, 0)
    story = client.get(f"/status/{job_id}", headers=test_auth).json
    assert story["status"] == "failed"
    assert story["last_error"].startswith("mj-0013")
    assert address in story["last_error"]
    assert {recipient["status"] for recipient in story["recipients"]} == {"failed"}
    assert [kind for _, kind, _ in deliveries(conn)] == ["email.failed", "email.failed"]
    assert conn.execute("SELECT count(*) FROM mailjet_events").fetchone() == (0,)


def test_any_other_address_is_delivered_and_suppressions_apply(conn, client, test_auth, settings) -> None:
    first = client.post("/queue", json=message("Ann@Example.org"), headers=test_auth).json["id"]
    bounced = client.post("/queue", json=message(f"bounced@{DOMAIN}"), headers=test_auth).json["id"]
    assert run_sender(settings).sent == 2
    assert client.get(f"/status/{first}", headers=test_auth).json["recipients"][0]["status"] == "delivered"
    assert client.get(f"/status/{bounced}", headers=test_auth).json["recipients"][0]["status"] == "bounced"

    again = client.post("/queue", json=message(f"bounced@{DOMAIN}"), headers=test_auth).json["id"]
    assert run_sender(settings).suppressed == 1  # the hard bounce's suppression, as for a live app
    assert client.get(f"/status/{again}", headers=test_auth).json["status"] == "suppressed"


def test_a_batch_mixing_live_and_test_jobs_sends_only_the_live_ones_to_mailjet(
    conn, client, auth, test_auth, send_settings, simulator
) -> None:
    live = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    test = client.post("/queue", json=message(f"opened@{DOMAIN}"), headers=test_auth).json["id"]
    live_too = client.post("/queue", json=message("bob@example.org"), headers=auth).json["id"]

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent) == (3, 3)  # one claim, one batch
    recorded = sends(simulator)
    assert recorded["calls"] == 1
    assert recorded["by_custom_id"] == {live: 1, live_too: 1}
    test_story = client.get(f"/status/{test}", headers=test_auth).json
    assert test_story["test"] is True and test_story["recipients"][0]["status"] == "opened"
    live_story = client.get(f"/status/{live}", headers=auth).json
    assert live_story["test"] is False and live_story["recipients"][0]["status"] == "sent"
    # Each app sees only its own jobs, test or not.
    assert client.get(f"/status/{test}", headers=auth).status_code == 404
    assert client.get(f"/status/{live}", headers=test_auth).status_code == 404


def test_a_test_job_whose_attempt_was_lost_is_answered_again_without_mailjet(conn, client, test_auth, settings) -> None:
    job_id = client.post("/queue", json=message(f"clicked@{DOMAIN}"), headers=test_auth).json["id"]
    # As the takeover leaves a job whose sender died mid-send: to be checked with Mailjet before any resend.
    conn.execute("UPDATE jobs SET verify_before_send = true, lost_attempt_at = now() - interval '1 hour'")

    assert run_sender(settings).sent == 1  # no lookup at Mailjet (unreachable here): nothing was recorded
    assert client.get(f"/status/{job_id}", headers=test_auth).json["recipients"][0]["status"] == "clicked"


def test_a_revoked_test_apps_lost_attempt_is_cancelled_without_mailjet(conn, client, test_auth, settings) -> None:
    job_id = client.post("/queue", json=message(f"opened@{DOMAIN}"), headers=test_auth).json["id"]
    conn.execute("UPDATE jobs SET verify_before_send = true, lost_attempt_at = now() - interval '1 hour'")
    apps.revoke_app(conn, "sandbox")  # leaves the job to the sender, which would ask Mailjet for a live one

    outcome = run_sender(settings)

    assert (outcome.claimed, outcome.cancelled, outcome.retried) == (1, 1, 0)
    assert conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone() == ("cancelled",)
