"""Delivering webhooks to a real local HTTP receiver: claim → post → record, retries, 410, timeouts,
slow subscribers, rotation, replay, and no loss under concurrent status changes."""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
import time
from collections.abc import Iterator

import pytest

from mailer.config import Settings
from mailer.domain import statuses
from mailer.services import webhook_delivery
from tests.integration.webhooks_support import (
    BIG_ID,
    expand,
    mark_sent,
    messages,
    post_events,
    queue,
    register,
    set_status,
)
from tests.webhook_receiver import Receiver, running_receiver, verify_all


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receiver listens on 127.0.0.1; retries follow at once; attempts time out fast; no host rate limit
    (tests/integration/test_webhook_pinning.py tests it)."""
    return dataclasses.replace(
        settings, webhook_allow_private=True, webhook_retry_schedule=(0, 0, 0), webhook_timeout_s=2.0,
        webhook_host_rate_per_s=0,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def deliveries_of(client, auth, endpoint: dict) -> list[dict]:  # type: ignore[no-untyped-def]
    response = client.get(f"/webhooks/{endpoint['id']}/deliveries", headers=auth)
    assert response.status_code == 200
    return list(response.json["items"])


def test_a_delivery_is_signed_per_the_standard_and_recorded(client, auth, conn, pool, settings, receiver):
    endpoint = register(client, auth, receiver.url("/ok"))
    job_id = queue(client, auth, metadata={"order_id": 1001})
    mark_sent(conn, job_id)

    [done] = webhook_delivery.deliver_due_batch(pool, settings)

    assert done.status == "succeeded"
    [request] = receiver.wait_for(1)
    body = request.verify(endpoint["secret"])
    [(msg_id, _, stored)] = messages(conn)
    assert request.headers["webhook-id"] == msg_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 10
    assert request.headers["content-type"] == "application/json"
    assert body == stored
    assert body["type"] == "email.sent"
    assert body["data"]["job_id"] == job_id
    assert body["data"]["message_id"] == str(BIG_ID)
    assert body["data"]["metadata"] == {"order_id": 1001}
    [delivery] = deliveries_of(client, auth, endpoint)
    assert (delivery["webhook_id"], delivery["type"], delivery["status"]) == (msg_id, "email.sent", "succeeded")
    [attempt] = delivery["attempts"]
    assert (attempt["status_code"], attempt["error"]) == (200, None)
    assert isinstance(attempt["latency_ms"], int)
    assert attempt["at"].endswith("Z")
    assert webhook_delivery.deliver_due_batch(pool, settings) == []  # nothing left to do


def test_a_failing_receiver_is_retried_with_the_same_id_and_body_until_it_succeeds(
    client, auth, conn, pool, settings, receiver
):
    receiver.plan("/flaky", 500, 503)
    endpoint = register(client, auth, receiver.url("/flaky"))
    mark_sent(conn, queue(client, auth))

    outcomes = [webhook_delivery.deliver_due_batch(pool, settings)[0].status for _ in range(3)]

    assert outcomes == ["pending", "pending", "succeeded"]
    requests_ = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in requests_}) == 1
    assert len({r.body for r in requests_}) == 1
    assert all(verify_all([endpoint["secret"]], r) == [True] for r in requests_)
    [delivery] = deliveries_of(client, auth, endpoint)
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
    # only the status: what the subscriber answered is not kept (the log says nothing an attacker could use)
    assert delivery["attempts"][0]["error"] == "HTTP 500"
    assert conn.execute("SELECT failing_since FROM webhook_endpoints").fetchone() == (None,)


def test_retries_follow_the_schedule_then_the_delivery_fails(client, auth, conn, pool, settings, receiver):
    settings = dataclasses.replace(settings, webhook_retry_schedule=(0, 0))
    receiver.plan("/down", status=500)
    endpoint = register(client, auth, receiver.url("/down"))
    mark_sent(conn, queue(client, auth))

    outcomes = [webhook_delivery.deliver_due_batch(pool, settings)[0].status for _ in range(3)]

    assert outcomes == ["pending", "pending", "failed"]
    assert webhook_delivery.deliver_due_batch(pool, settings) == []
    assert len(receiver.on("/down")) == 3
    assert client.get(f"/webhooks/{endpoint['id']}", headers=auth).json["enabled"] is True


def test_the_schedule_sets_the_next_attempt(client, auth, conn, pool, settings, receiver):
    settings = dataclasses.replace(settings, webhook_retry_schedule=(300,))
    receiver.plan("/down", status=502)
    register(client, auth, receiver.url("/down"))
    mark_sent(conn, queue(client, auth))

    webhook_delivery.deliver_due_batch(pool, settings)

    wait = conn.execute("SELECT extract(epoch FROM next_attempt_at - now()) FROM webhook_deliveries").fetchone()[0]
    assert 300 * 0.8 - 5 <= float(wait) <= 300 * 1.2
    assert webhook_delivery.deliver_due_batch(pool, settings) == []  # not due yet


def test_410_disables_the_endpoint_and_its_pending_deliveries(client, auth, conn, pool, settings, receiver):
    receiver.plan("/gone", status=410)
    endpoint = register(client, auth, receiver.url("/gone"))
    first, second = queue(client, auth), queue(client, auth, "bob@example.org")
    mark_sent(conn, first)
    mark_sent(conn, second, BIG_ID + 100)
    expand(conn)
    conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now() + interval '1 hour' WHERE id = "
                 "(SELECT max(id) FROM webhook_deliveries)")

    [done] = webhook_delivery.deliver_due_batch(pool, settings)

    assert done.status == "disabled"
    shown = client.get(f"/webhooks/{endpoint['id']}", headers=auth).json
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]
    assert [d["status"] for d in deliveries_of(client, auth, endpoint)] == ["disabled", "disabled"]
    set_status(conn, first, "delivered")  # a disabled endpoint gets nothing new
    assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (2,)
    assert client.post(f"/webhooks/{endpoint['id']}/deliveries/{done.delivery.id}/replay",
                       headers=auth).status_code == 409


def test_an_endpoint_failing_for_days_is_disabled(client, auth, conn, pool, settings, receiver):
    receiver.plan("/broken", status=500)
    endpoint = register(client, auth, receiver.url("/broken"))
    mark_sent(conn, queue(client, auth))

    assert webhook_delivery.deliver_due_batch(pool, settings)[0].status == "pending"  # one failure: no more
    conn.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '3 days 1 minute'")
    assert webhook_delivery.deliver_due_batch(pool, settings)[0].status == "disabled"

    shown = client.get(f"/webhooks/{endpoint['id']}", headers=auth).json
    assert shown["enabled"] is False
    assert shown["disabled_reason"].startswith("no successful delivery since")
    enabled = client.patch(f"/webhooks/{endpoint['id']}", json={"enabled": True}, headers=auth).json
    assert (enabled["enabled"], enabled["disabled_reason"]) == (True, None)
    assert conn.execute("SELECT failing_since FROM webhook_endpoints").fetchone() == (None,)


def test_a_success_ends_the_failure_streak(client, auth, conn, pool, settings, receiver):
    receiver.plan("/flaky", 500)
    register(client, auth, receiver.url("/flaky"))
    mark_sent(conn, queue(client, auth))
    webhook_delivery.deliver_due_batch(pool, settings)
    conn.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '2 days'")

    assert webhook_delivery.deliver_due_batch(pool, settings)[0].status == "succeeded"
    assert conn.execute("SELECT failing_since, disabled_at FROM webhook_endpoints").fetchone() == (None, None)


def test_a_timeout_is_a_failure_and_the_attempt_ends_at_the_deadline(client, auth, conn, pool, settings, receiver):
    settings = dataclasses.replace(settings, webhook_timeout_s=0.5)
    receiver.plan("/slow", delay_s=3)
    endpoint = register(client, auth, receiver.url("/slow"))
    mark_sent(conn, queue(client, auth))

    [done] = webhook_delivery.deliver_due_batch(pool, settings)

    assert done.status == "pending"
    assert done.attempt.error == "timeout"
    assert done.attempt.latency_ms < 2000
    [delivery] = deliveries_of(client, auth, endpoint)
    assert (delivery["attempts"][0]["status_code"], delivery["attempts"][0]["error"]) == (None, "timeout")


def test_a_receiver_dripping_its_answer_is_cut_at_the_deadline(client, auth, conn, pool, settings, receiver):
    # Each byte comes within the socket timeout, so only the attempt's overall deadline can end it.
    settings = dataclasses.replace(settings, webhook_timeout_s=1.0)
    receiver.plan("/drip", drip_s=0.2)  # about 8 s for the whole answer
    register(client, auth, receiver.url("/drip"))
    mark_sent(conn, queue(client, auth))

    started = time.monotonic()
    [done] = webhook_delivery.deliver_due_batch(pool, settings)

    assert time.monotonic() - started < 3
    assert done.status == "pending"
    assert done.attempt.error == "timeout"


def test_redirects_are_not_followed(client, auth, conn, pool, settings, receiver):
    receiver.plan("/moved", status=302)
    register(client, auth, receiver.url("/moved"))
    mark_sent(conn, queue(client, auth))

    [done] = webhook_delivery.deliver_due_batch(pool, settings)

    assert (done.status, done.attempt.status_code) == ("pending", 302)
    assert "redirects are not followed" in str(done.attempt.error)
    assert receiver.on("/redirected") == []


def test_a_url_that_turned_private_is_refused_at_delivery(client, auth, conn, pool, settings, receiver):
    register(client, auth, receiver.url("/ok"))  # allowed when registered (allow_private on) ...
    mark_sent(conn, queue(client, auth))

    [done] = webhook_delivery.deliver_due_batch(pool, dataclasses.replace(settings, webhook_allow_private=False))

    assert done.status == "pending"
    assert done.attempt.error == "refused address"
    assert receiver.requests == []


def test_a_slow_endpoint_does_not_delay_a_fast_one_in_the_same_batch(client, auth, conn, pool, settings, receiver):
    receiver.plan("/slow", delay_s=1.5)
    register(client, auth, receiver.url("/slow"))
    register(client, auth, receiver.url("/fast"))
    mark_sent(conn, queue(client, auth))
    started = time.monotonic()
    batch = threading.Thread(target=webhook_delivery.deliver_due_batch, args=(pool, settings))
    batch.start()
    try:
        [fast] = receiver.wait_for(1, timeout=1.0, path="/fast")
        assert fast.at - started < 0.8
        deadline = time.monotonic() + 1.0
        while conn.execute("SELECT status FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
                           " WHERE e.url LIKE '%%/fast'").fetchone() != ("succeeded",):
            assert time.monotonic() < deadline, "the fast delivery was not recorded while the slow one ran"
            time.sleep(0.02)
        assert receiver.on("/slow") and batch.is_alive()  # the slow one is still being answered
    finally:
        batch.join()


def test_the_dispatcher_keeps_a_slow_endpoint_to_its_share(client, auth, conn, pool, settings, receiver):
    settings = dataclasses.replace(settings, webhook_concurrency=4)  # one post in flight per endpoint
    receiver.plan("/slow", status=200, delay_s=0.7)
    slow = register(client, auth, receiver.url("/slow"), ["sent"])
    register(client, auth, receiver.url("/fast"), ["delivered"])
    jobs = [queue(client, auth, f"r{i}@example.org") for i in range(6)]
    for i, job_id in enumerate(jobs):
        mark_sent(conn, job_id, BIG_ID + i)
    set_status(conn, jobs[0], "delivered")
    dispatcher = webhook_delivery.Dispatcher(pool, settings)
    try:
        started = time.monotonic()
        assert dispatcher.dispatch() == 2  # one slow (its share), one fast: not six slow ones
        [fast] = receiver.wait_for(1, timeout=1.0, path="/fast")
        assert fast.at - started < 0.5
        receiver.wait_for(2, timeout=3.0, path="/slow")  # the dispatcher refills as each post ends
    finally:
        client.patch(f"/webhooks/{slow['id']}", json={"enabled": False}, headers=auth)
        dispatcher.close()
    assert len(receiver.on("/slow")) < 6


def test_after_rotation_both_secrets_verify_until_the_old_one_expires(client, auth, conn, pool, settings, receiver):
    endpoint = register(client, auth, receiver.url("/ok"))
    new = client.post(f"/webhooks/{endpoint['id']}/rotate-secret", headers=auth).json["secret"]
    job_id = queue(client, auth)
    mark_sent(conn, job_id)

    webhook_delivery.deliver_due_batch(pool, settings)
    [during] = receiver.wait_for(1)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verify_all([new, endpoint["secret"]], during) == [True, True]

    conn.execute("UPDATE webhook_endpoints SET previous_secret_expires_at = now() - interval '1 second'")
    set_status(conn, job_id, "delivered")
    webhook_delivery.deliver_due_batch(pool, settings)
    after = receiver.wait_for(2)[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert verify_all([new, endpoint["secret"]], after) == [True, False]


def test_replay_sends_the_same_message_again(client, auth, conn, pool, settings, receiver):
    endpoint = register(client, auth, receiver.url("/ok"))
    mark_sent(conn, queue(client, auth))
    [first] = webhook_delivery.deliver_due_batch(pool, settings)
    url = f"/webhooks/{endpoint['id']}/deliveries/{first.delivery.id}/replay"

    response = client.post(url, headers=auth)

    assert response.status_code == 202
    assert (response.json["id"], response.json["status"]) == (first.delivery.id, "pending")
    assert webhook_delivery.deliver_due_batch(pool, settings)[0].status == "succeeded"
    one, two = receiver.wait_for(2)
    assert one.headers["webhook-id"] == two.headers["webhook-id"]
    assert one.body == two.body
    [delivery] = deliveries_of(client, auth, endpoint)
    assert [a["status_code"] for a in delivery["attempts"]] == [200, 200]
    assert client.post(f"/webhooks/{endpoint['id']}/deliveries/{first.delivery.id + 99}/replay",
                       headers=auth).status_code == 404
    conn.execute("UPDATE webhook_deliveries SET in_flight_until = now() + interval '1 minute'")
    assert client.post(url, headers=auth).status_code == 409


def test_the_delivery_list_pages_newest_first_and_filters(client, auth, conn, pool, settings, receiver):
    receiver.plan("/mixed", 500)
    endpoint = register(client, auth, receiver.url("/mixed"))
    for i in range(3):
        mark_sent(conn, queue(client, auth, f"r{i}@example.org"), BIG_ID + i)
    webhook_delivery.deliver_due_batch(pool, dataclasses.replace(settings, webhook_retry_schedule=(3600,)))
    url = f"/webhooks/{endpoint['id']}/deliveries"

    first = client.get(url + "?limit=2", headers=auth).json
    second = client.get(url + f"?limit=2&cursor={first['next_cursor']}", headers=auth).json

    ids = [d["id"] for d in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 3
    assert second["next_cursor"] is None
    assert [d["status"] for d in client.get(url + "?status=pending", headers=auth).json["items"]] == ["pending"]
    assert len(client.get(url + "?status=succeeded", headers=auth).json["items"]) == 2


def test_concurrent_status_changes_are_each_delivered_exactly_once_in_order(
    app, client, auth, conn, pool, settings, receiver
):
    register(client, auth, receiver.url("/all"))
    jobs = [queue(client, auth, f"r{i}@example.org") for i in range(20)]
    for i, job_id in enumerate(jobs):
        mark_sent(conn, job_id, BIG_ID + i)
    now = int(time.time())
    events = [
        {"event": name, "time": now + k, "MessageID": BIG_ID + i, "email": f"r{i}@example.org"}
        for i in range(20) for k, name in enumerate(("sent", "open", "click", "unsub"))
    ]
    random.Random(3).shuffle(events)  # noqa: S311  # a repeatable order, not a secret
    posting_done = threading.Event()

    def post(chunk: list[dict]) -> None:
        own_client = app.test_client()
        for item in chunk:
            post_events(own_client, [item])

    def deliver() -> None:
        while True:
            finished = posting_done.is_set()  # read first: every change committed before it is due now
            if not webhook_delivery.deliver_due_batch(pool, settings):
                if finished:
                    return
                time.sleep(0.01)

    posters = [threading.Thread(target=post, args=(events[n::5],)) for n in range(5)]
    deliverers = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in posters + deliverers:
        thread.start()
    for thread in posters:
        thread.join()
    posting_done.set()
    for thread in deliverers:
        thread.join()

    stored = {msg_id: body for msg_id, _, body in messages(conn)}
    received = collections.Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(received) == set(stored)
    assert set(received.values()) == {1}  # each exactly once
    assert conn.execute("SELECT DISTINCT status FROM webhook_deliveries").fetchall() == [("succeeded",)]
    by_recipient: dict[str, list[dict]] = collections.defaultdict(list)
    for request in receiver.requests:
        by_recipient[request.json["data"]["recipient"]].append(request.json)
    finals = dict(conn.execute("SELECT email, status FROM recipients").fetchall())
    assert set(by_recipient) == set(finals)
    for email, bodies in by_recipient.items():
        ordered = sorted(bodies, key=lambda body: body["timestamp"])
        ranks = [statuses.RECIPIENT_STATUS_RANK[body["data"]["status"]] for body in ordered]
        assert ranks == sorted(set(ranks)), (email, [b["data"]["status"] for b in ordered])  # only ever up
        assert ordered[0]["data"]["status"] == "sent"
        assert ordered[-1]["data"]["status"] == finals[email]
