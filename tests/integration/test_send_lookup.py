"""Jobs an earlier attempt may have sent, checked with Mailjet by CustomID: what the lookup finds is recorded as a
send's result (MessageIDs, `sent`, webhooks, events); the lookups of one claim run several at a time, each
within the shared cap."""

from __future__ import annotations

import dataclasses
import time

import requests
from prometheus_client import REGISTRY

from mailer.mailjet import send as mailjet
from mailer.services import rate_limits, sending
from tests.integration.sending_support import make_due, message, run_sender, script, sends
from tests.integration.webhooks_support import messages, post_events, register

URL = "https://93.184.215.14/"  # never called: the test looks at the outbox


def queue(client, auth, *bodies: dict) -> list[str]:  # type: ignore[no-untyped-def]
    response = client.post("/queue", json={"messages": list(bodies)}, headers=auth)
    assert response.status_code == 202, response.data
    return [str(job["id"]) for job in response.json["jobs"]]


def accepted_then_lost(settings, simulator, conn, count: int) -> None:  # type: ignore[no-untyped-def]
    """Mailjet accepts the due jobs but its answer is lost (a 500): they come back, due, to be checked."""
    script(simulator, "accept_then_500")
    assert run_sender(settings).retried == count
    assert conn.execute("SELECT count(*) FROM jobs WHERE verify_before_send").fetchone() == (count,)
    make_due(conn)


def first_ids(simulator: str, job_id: str) -> dict[str, str]:
    """The MessageIDs Mailjet gave a job's recipients, by address."""
    [accepted] = [m for m in sends(simulator)["messages"] if m["custom_id"] == job_id]
    return {r["email"]: r["message_id"] for r in accepted["recipients"]}


def lookups_answered() -> float:
    return REGISTRY.get_sample_value("mailer_mailjet_responses_total", {"call": "lookup", "code": "200"}) or 0.0


def test_a_job_the_lookup_finds_is_recorded_as_sent_with_its_first_message_ids(
    client, auth, send_settings, simulator, conn
) -> None:
    register(client, auth, URL, ["*"])
    body = dict(message("ann@example.org"), cc=[{"email": "Bob@Example.org"}])
    [job_id] = queue(client, auth, body)
    accepted_then_lost(send_settings, simulator, conn, 1)
    ids = first_ids(simulator, job_id)
    # An event that came (without CustomID) before the job was checked waits for its MessageID.
    post_events(client, [{"event": "open", "time": int(time.time()), "MessageID": int(ids["Bob@Example.org"]),
                          "email": "bob@example.org"}])

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent) == (1, 1)
    assert sends(simulator)["calls"] == 1  # not sent again
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "sent"
    recipients = {r["email"]: r for r in story["recipients"]}
    assert {email: r["message_id"] for email, r in recipients.items()} == {
        "ann@example.org": ids["ann@example.org"], "Bob@Example.org": ids["Bob@Example.org"]}
    assert recipients["ann@example.org"]["status"] == "sent"
    assert recipients["Bob@Example.org"]["status"] == "opened"  # the waiting event, applied
    uuids = conn.execute("SELECT count(*) FROM recipients WHERE message_uuid IS NOT NULL").fetchone()
    assert uuids == (2,)
    sent_bodies = [body for _, kind, body in messages(conn) if kind == "email.sent"]
    assert {(b["data"]["recipient"], b["data"]["message_id"]) for b in sent_bodies} == {
        ("ann@example.org", ids["ann@example.org"]), ("Bob@Example.org", ids["Bob@Example.org"])}
    assert [kind for _, kind, _ in messages(conn)].count("email.opened") == 1

    # An event carrying only the MessageID (no CustomID) finds its recipient.
    post_events(client, [{"event": "sent", "time": int(time.time()), "MessageID": int(ids["ann@example.org"]),
                          "email": "ann@example.org"}])
    ann = next(r for r in client.get(f"/status/{job_id}", headers=auth).json["recipients"]
               if r["email"] == "ann@example.org")
    assert ann["status"] == "delivered"
    assert [kind for _, kind, _ in messages(conn)].count("email.delivered") == 1


def test_rows_of_another_custom_id_are_never_taken_for_the_job(client, auth, send_settings, simulator, conn) -> None:
    [other] = queue(client, auth, message("ann@example.org"))
    assert run_sender(send_settings).sent == 1
    [found] = queue(client, auth, message("ann@example.org"))
    accepted_then_lost(send_settings, simulator, conn, 1)
    [unsent] = queue(client, auth, message("ann@example.org"))
    conn.execute("UPDATE jobs SET verify_before_send = true WHERE id = %s", (unsent,))  # outcome unknown, not sent
    requests.post(f"{simulator}/_sim/config", json={"lookup_ignores_custom_id": True}, timeout=5).raise_for_status()

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent) == (2, 2)
    # Mailjet listed every message for both lookups: `unsent` was still sent (once), `found` was not again.
    assert sends(simulator)["by_custom_id"] == {other: 1, found: 1, unsent: 1}
    stored = {job_id: client.get(f"/status/{job_id}", headers=auth).json["recipients"][0]["message_id"]
              for job_id in (other, found, unsent)}
    assert stored[found] == first_ids(simulator, found)["ann@example.org"]
    assert stored[unsent] == first_ids(simulator, unsent)["ann@example.org"]
    assert len(set(stored.values())) == 3


def test_a_recipient_suppressed_now_and_not_in_the_message_stays_out(
    client, auth, send_settings, simulator, conn
) -> None:
    body = dict(message("ann@example.org"), cc=[{"email": "bob@example.org"}])
    [job_id] = queue(client, auth, body)
    assert client.post("/suppressions", json={"email": "bob@example.org"}, headers=auth).status_code == 201
    accepted_then_lost(send_settings, simulator, conn, 1)  # sent to Ann alone
    assert set(first_ids(simulator, job_id)) == {"ann@example.org"}

    assert run_sender(send_settings).sent == 1

    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "sent"
    recipients = {r["email"]: (r["status"], r["message_id"]) for r in story["recipients"]}
    assert recipients == {"ann@example.org": ("sent", first_ids(simulator, job_id)["ann@example.org"]),
                          "bob@example.org": ("suppressed", None)}


def test_fifty_lookups_of_one_claim_run_several_at_a_time(client, auth, send_settings, simulator, conn) -> None:
    latency = 0.3
    ids = queue(client, auth, *(message(f"r{i}@example.org") for i in range(50)))
    accepted_then_lost(send_settings, simulator, conn, 50)
    requests.post(f"{simulator}/_sim/config", json={"latency_s": latency}, timeout=5).raise_for_status()
    answered = lookups_answered()

    started = time.monotonic()
    outcome = run_sender(send_settings)
    elapsed = time.monotonic() - started

    assert (outcome.claimed, outcome.sent) == (50, 50)
    assert sends(simulator)["calls"] == 1
    assert lookups_answered() - answered == 50  # one count per lookup, from whichever thread made it
    # One after the other they take 15 s; 10 at a time, 5 rounds of 0.3 s.
    assert elapsed < 0.4 * 50 * latency, elapsed
    pending = conn.execute(
        "SELECT count(*) FROM recipients WHERE job_id = ANY(%s::uuid[]) AND (message_id IS NULL OR status <> 'sent')",
        (ids,),
    ).fetchone()
    assert pending == (0,)


def test_the_lookups_of_one_claim_keep_to_the_shared_cap(client, auth, send_settings, simulator, conn) -> None:
    cap = 20.0
    settings = dataclasses.replace(send_settings, mailjet_max_calls_per_s=cap, mailjet_lookup_concurrency=50)
    queue(client, auth, *(message(f"r{i}@example.org") for i in range(30)))
    accepted_then_lost(send_settings, simulator, conn, 30)
    assert rate_limits.take(conn, rate_limits.MAILJET_KEY, cap, cap, cost=cap).granted  # an empty bucket

    started = time.monotonic()
    outcome = run_sender(settings)
    elapsed = time.monotonic() - started

    assert outcome.sent == 30
    assert elapsed >= 30 / cap * 0.9  # a token each, at 20 a second (without the cap: well under 0.5 s)


class _Lagging(mailjet.MailjetClient):
    """The simulator's client, except that Mailjet does not list one address's row yet."""

    def __init__(self, base_url: str, hidden: str) -> None:
        super().__init__(base_url, "key", "secret", timeout=2)
        self.hidden = hidden

    def find_by_custom_id(self, custom_id: str) -> list[mailjet.FoundRecipient]:
        return [row for row in super().find_by_custom_id(custom_id) if row.email != self.hidden]


def test_a_recipient_mailjet_does_not_list_yet_is_left_to_its_events(
    client, auth, send_settings, simulator, conn, pool
) -> None:
    body = dict(message("ann@example.org"), cc=[{"email": "bob@example.org"}])
    [job_id] = queue(client, auth, body)
    accepted_then_lost(send_settings, simulator, conn, 1)
    mailjet_client = _Lagging(simulator, "bob@example.org")

    try:
        assert sending.send_due_batch(pool, mailjet_client, send_settings).sent == 1
    finally:
        mailjet_client.close()

    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "sent"  # Mailjet has it: never sent again
    assert sends(simulator)["calls"] == 1
    recipients = {r["email"]: r for r in story["recipients"]}
    assert recipients["bob@example.org"]["status"] == "pending"
    assert recipients["ann@example.org"]["message_id"] == first_ids(simulator, job_id)["ann@example.org"]
    # Bob's events carry the CustomID: they find him by it and his address.
    post_events(client, [{"event": "sent", "time": int(time.time()), "CustomID": job_id, "email": "bob@example.org",
                          "MessageID": int(first_ids(simulator, job_id)["bob@example.org"])}])
    bob = next(r for r in client.get(f"/status/{job_id}", headers=auth).json["recipients"]
               if r["email"] == "bob@example.org")
    assert bob["status"] == "delivered"
    # ... and give him the MessageID, so that his events without a CustomID (opens, clicks) find him too.
    assert bob["message_id"] == first_ids(simulator, job_id)["bob@example.org"]
    post_events(client, [{"event": "open", "time": int(time.time()) + 1, "email": "bob@example.org",
                          "MessageID": int(bob["message_id"])}])
    bob = next(r for r in client.get(f"/status/{job_id}", headers=auth).json["recipients"]
               if r["email"] == "bob@example.org")
    assert bob["status"] == "opened"


class _FailingFor(mailjet.MailjetClient):
    """The simulator's client, except that the lookup of one CustomID fails."""

    def __init__(self, base_url: str, failing: str) -> None:
        super().__init__(base_url, "key", "secret", timeout=2)
        self.failing = failing

    def find_by_custom_id(self, custom_id: str) -> list[mailjet.FoundRecipient]:
        if custom_id == self.failing:
            raise mailjet.SendError("Mailjet 503 Service Unavailable", transient=True, ambiguous=False,
                                    status_code=503)
        return super().find_by_custom_id(custom_id)


def test_a_failed_lookup_retries_its_own_job_only(client, auth, send_settings, simulator, conn, pool) -> None:
    ids = queue(client, auth, *(message(f"r{i}@example.org") for i in range(3)))
    accepted_then_lost(send_settings, simulator, conn, 3)
    mailjet_client = _FailingFor(simulator, ids[1])

    try:
        outcome = sending.send_due_batch(pool, mailjet_client, send_settings)
    finally:
        mailjet_client.close()

    assert (outcome.sent, outcome.retried) == (2, 1)
    query = "SELECT id::text, status, verify_before_send, last_error FROM jobs"
    rows = {row[0]: row[1:] for row in conn.execute(query)}
    assert rows[ids[0]][0] == rows[ids[2]][0] == "sent"
    status, verify, error = rows[ids[1]]
    assert (status, verify) == ("queued", True)  # still to be checked before any resend
    assert error.startswith("could not check an earlier attempt with Mailjet: Mailjet 503")
    assert sends(simulator)["calls"] == 1
