"""The outbox: every recipient status change fans out, in its own transaction, to the matching endpoints."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
import pytest

from mailer import db
from mailer.mailjet import send as mailjet
from mailer.services import sending
from mailer.store.queries import query
from tests.integration.conftest import make_key
from tests.integration.webhooks_support import (
    BIG_ID,
    deliveries,
    mark_sent,
    messages,
    post_events,
    queue,
    register,
    set_status,
)

URL = "https://93.184.215.14/"  # never called: these tests only look at the outbox
RFC3339_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


class Rollback(Exception):
    pass


def test_a_change_that_rolls_back_leaves_no_message(client, auth, conn):
    register(client, auth, URL)
    job_id = queue(client, auth)

    with pytest.raises(Rollback), conn.transaction():
        mark_sent(conn, job_id)
        assert len(messages(conn)) == 1  # written with the change, inside its transaction
        raise Rollback

    assert messages(conn) == []
    assert deliveries(conn) == []


def test_one_delivery_per_matching_enabled_endpoint(client, auth, conn):
    register(client, auth, URL + "all", ["*"])
    register(client, auth, URL + "delivered", ["delivered"])
    register(client, auth, URL + "sent-opened", ["sent", "opened"])
    off = register(client, auth, URL + "disabled", ["*"])
    client.patch(f"/webhooks/{off['id']}", json={"enabled": False}, headers=auth)
    other = {"Authorization": f"Bearer {make_key(conn, 'other')}"}
    register(client, other, URL + "other-app", ["*"])
    job_id = queue(client, auth)

    mark_sent(conn, job_id)
    set_status(conn, job_id, "delivered")

    assert [row[1] for row in messages(conn)] == ["email.sent", "email.delivered"]
    assert deliveries(conn) == [
        (URL + "all", "email.sent", "pending"),
        (URL + "sent-opened", "email.sent", "pending"),
        (URL + "all", "email.delivered", "pending"),
        (URL + "delivered", "email.delivered", "pending"),
    ]


def test_no_endpoint_of_the_app_means_no_message(client, auth, conn):
    other = {"Authorization": f"Bearer {make_key(conn, 'other')}"}
    register(client, other, URL, ["*"])
    register(client, auth, URL, ["bounced"])  # this app's endpoint wants something else
    job_id = queue(client, auth)

    mark_sent(conn, job_id)
    set_status(conn, job_id, "delivered")

    assert messages(conn) == []


def test_a_batch_of_50_recipients_is_one_statement_and_50_messages(client, auth, conn):
    register(client, auth, URL)
    job_id = queue(client, auth, *(f"r{i}@example.org" for i in range(50)))

    mark_sent(conn, job_id)  # one UPDATE of 50 rows: the statement-level trigger runs once

    bodies = [body for _, _, body in messages(conn)]
    assert len(bodies) == 50
    assert {body["data"]["recipient"] for body in bodies} == {f"r{i}@example.org" for i in range(50)}
    assert len({body["data"]["message_id"] for body in bodies}) == 50
    assert len(deliveries(conn)) == 50


def test_no_change_no_message_and_a_reset_to_pending_is_not_reported(client, auth, conn):
    register(client, auth, URL)
    job_id = queue(client, auth)
    set_status(conn, job_id, "pending")  # same status: no change
    assert messages(conn) == []
    set_status(conn, job_id, "failed")
    set_status(conn, job_id, "failed")
    set_status(conn, job_id, "pending")  # what POST /queue/{id}/retry does to failed recipients
    assert [row[1] for row in messages(conn)] == ["email.failed"]


def test_the_body_of_a_sent_change(client, auth, conn):
    register(client, auth, URL)
    job_id = queue(client, auth, metadata={"order_id": 1001, "tags": ["a"]})

    mark_sent(conn, job_id)

    [(msg_id, kind, body)] = messages(conn)
    assert re.fullmatch(r"msg_[0-9a-f]{32}", msg_id)
    assert kind == "email.sent"
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "email.sent"
    assert RFC3339_MICROS.match(body["timestamp"])
    assert body["data"] == {
        "job_id": job_id, "recipient": "ann@example.org", "message_id": str(BIG_ID), "status": "sent",
        "metadata": {"order_id": 1001, "tags": ["a"]},
        "event": {"type": "sent", "at": body["timestamp"]},
    }


def _numbers(value: Any) -> list[int | float]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_a_mailjet_driven_change_carries_a_curated_event(client, auth, conn):
    register(client, auth, URL, ["clicked", "bounced"])
    job_id = queue(client, auth)
    mark_sent(conn, job_id)
    at = int(time.time()) - 60
    post_events(client, [{
        "event": "click", "time": at, "MessageID": BIG_ID, "email": "ann@example.org", "mj_campaign_id": BIG_ID,
        "mj_contact_id": BIG_ID, "customcampaign": "", "url": "https://shop.example/p?id=1", "ip": "203.0.113.9",
        "geo": "DE", "agent": "Mozilla/5.0", "source": 2**60,
    }])

    [(_, kind, body)] = messages(conn)
    assert kind == "email.clicked"
    event = body["data"]["event"]
    assert event == {
        "type": "clicked", "at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(at)), "mailjet_event": "click",
        "url": "https://shop.example/p?id=1", "ip": "203.0.113.9", "geo": "DE", "agent": "Mozilla/5.0",
        "source": str(2**60),  # a number above 2**53 becomes a string
    }
    assert body["data"]["message_id"] == str(BIG_ID)
    assert all(abs(number) <= 2**53 for number in _numbers(body))


def test_the_event_detail_is_one_function_inlined_in_the_fan_out_and_the_feed(client, auth, conn):
    register(client, auth, URL, ["clicked"])
    job_id = queue(client, auth)
    mark_sent(conn, job_id)
    post_events(client, [{"event": "click", "time": int(time.time()) - 60, "MessageID": BIG_ID,
                          "email": "ann@example.org", "url": "https://shop.example/", "source": 2**60}])
    [recipient_id, app_id] = conn.execute(
        "SELECT r.id, j.app_id FROM recipients r JOIN jobs j ON j.id = r.job_id WHERE r.job_id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    conn.execute("SET track_functions = 'all'")  # SQL functions too, unless the planner inlined them
    with conn.transaction():
        conn.execute("SELECT webhook_enqueue(ARRAY[%s]::bigint[])", (recipient_id,))  # the clicked change again
        feed = conn.execute(query("activity_page"), {"app_id": app_id, "after_xid": "0", "after_id": 0,
                                                     "types": ["clicked"], "limit": 10}).fetchall()
        calls = dict(conn.execute(  # this transaction's own calls
            "SELECT funcname, calls FROM pg_stat_xact_user_functions WHERE funcname LIKE 'webhook_%'").fetchall())
    # sql/migrations/0044: a call of webhook_event_detail would mean a function call per row and another plan;
    # its body ran inlined in both statements (ten webhook_json_safe each, never inlined: to_jsonb is stable).
    assert "webhook_event_detail" not in calls, calls
    assert (calls["webhook_enqueue"], calls["webhook_json_safe"]) == (1, 20), calls
    [(_, _, first), (_, _, again)] = messages(conn)
    [(_, _, _, from_feed)] = feed
    assert first["data"]["event"] == again["data"]["event"] == from_feed["data"]["event"]
    assert first["data"]["event"]["source"] == str(2**60)


def test_a_hard_bounce_carries_its_error_fields(client, auth, conn):
    register(client, auth, URL, ["bounced"])
    job_id = queue(client, auth)
    mark_sent(conn, job_id)
    post_events(client, [{
        "event": "bounce", "time": int(time.time()), "MessageID": BIG_ID, "email": "ann@example.org",
        "blocked": False, "hard_bounce": True, "error_related_to": "recipient", "error": "user unknown",
        "comment": "550 5.1.1 no such user",
    }])

    [(_, _, body)] = messages(conn)
    event = body["data"]["event"]
    assert (event["type"], event["mailjet_event"], event["hard_bounce"]) == ("bounced", "bounce", True)
    assert (event["error"], event["error_related_to"]) == ("user unknown", "recipient")
    assert event["comment"] == "550 5.1.1 no such user"
    assert "blocked" not in event


def test_a_recipient_stored_with_a_final_status_is_reported(client, auth, conn):
    register(client, auth, URL, ["suppressed"])
    job_id = queue(client, auth)
    conn.execute(
        "INSERT INTO recipients (job_id, kind, position, email, status) VALUES (%s, 'cc', 0, 'cy@example.org', %s)",
        (job_id, "suppressed"),
    )
    [(_, kind, body)] = messages(conn)
    assert (kind, body["data"]["recipient"]) == ("email.suppressed", "cy@example.org")


def test_each_final_recipient_of_one_insert_is_reported_and_a_pending_one_is_not(client, auth, conn):
    register(client, auth, URL, ["*"])
    job_id = queue(client, auth)
    assert messages(conn) == []  # the queued recipient is pending
    conn.execute(
        "INSERT INTO recipients (job_id, kind, position, email, status)"
        " VALUES (%(job)s, 'cc', 0, 'cy@example.org', 'suppressed'), (%(job)s, 'cc', 1, 'dee@example.org', 'pending'),"
        " (%(job)s, 'bcc', 0, 'eve@example.org', 'failed')",
        {"job": job_id},
    )
    reported = {(kind, body["data"]["recipient"]) for _, kind, body in messages(conn)}
    assert reported == {("email.suppressed", "cy@example.org"), ("email.failed", "eve@example.org")}


def test_storing_pending_recipients_calls_no_fan_out_function(client, auth, conn):
    register(client, auth, URL, ["*"])  # an enabled endpoint: the fan-out has somewhere to go
    job_id = queue(client, auth)
    conn.execute("SET track_functions = 'pl'")
    with conn.transaction():
        conn.execute(
            "INSERT INTO recipients (job_id, kind, position, email) VALUES (%(job)s, 'cc', 0, 'cy@example.org'),"
            " (%(job)s, 'cc', 1, 'dee@example.org')",
            {"job": job_id},
        )
        [calls] = conn.execute(  # this transaction's own calls (sql/migrations/0016: the WHEN clause rules them out)
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname LIKE 'webhook_%'"
        ).fetchone()
    assert calls == 0
    assert messages(conn) == []


def test_the_sender_outcomes_sent_and_failed_are_reported(client, auth, conn, send_settings):
    register(client, auth, URL, ["sent", "failed"])
    good = queue(client, auth, "ann@example.org")
    bad = queue(client, auth, "bob@nowhere.invalid")  # the simulator rejects .invalid addresses

    pool = db.create_pool(send_settings, name="test-sender")
    try:
        client_ = mailjet.MailjetClient(send_settings.mailjet_api_url, "key", "secret", timeout=2)
        assert sending.send_due_batch(pool, client_, send_settings).claimed == 2
    finally:
        pool.close()

    reported = {(body["data"]["job_id"], body["type"]) for _, _, body in messages(conn)}
    assert reported == {(good, "email.sent"), (bad, "email.failed")}
    sent = next(body for _, _, body in messages(conn) if body["type"] == "email.sent")
    assert int(sent["data"]["message_id"]) > 2**53


def test_nothing_is_written_while_no_endpoint_exists_at_all(client, auth, conn: psycopg.Connection):
    job_id = queue(client, auth, *(f"r{i}@example.org" for i in range(50)))
    mark_sent(conn, job_id)
    set_status(conn, job_id, "delivered")
    assert conn.execute("SELECT count(*) FROM webhook_messages").fetchone() == (0,)
