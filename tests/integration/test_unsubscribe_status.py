"""A one-click unsubscribe moves its recipient to `unsubscribed`: /status, /activity and one `email.unsubscribed`."""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest

from mailer.services import unsubscribe
from tests.integration.webhooks_support import (
    BIG_ID,
    deliveries,
    mark_sent,
    messages,
    post_events,
    register,
    set_status,
)

HOOK = "https://93.184.215.14/hooks/unsub"  # a public IP literal: never called here
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def app_id(conn: psycopg.Connection, auth: dict[str, str]) -> int:
    row = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()
    assert row is not None
    return int(row[0])


def sent_bulk(client, auth, conn, *to: str, cc: tuple[str, ...] = (), sent: bool = True) -> str:  # type: ignore[no-untyped-def]
    """A bulk job to `to`, as the sender leaves it once Mailjet accepted it (each recipient `sent`)."""
    body = {"from": {"email": "news@example.com"}, "to": [{"email": a} for a in to], "subject": "News",
            "text": "hi", "priority": "bulk", "metadata": {"list": "weekly"}}
    if cc:
        body["cc"] = [{"email": a} for a in cc]
    response = client.post("/queue", json=body, headers=auth)
    assert response.status_code == 202, response.data
    job_id = str(response.json["id"])
    if sent:
        mark_sent(conn, job_id)
    return job_id


def token_for(conn: psycopg.Connection, app_id: int, job_id: str, email: str) -> str:
    return unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=uuid.UUID(job_id), email=email)


def statuses(client, auth, job_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r["email"]: r["status"] for r in client.get(f"/status/{job_id}", headers=auth).json["recipients"]}


def activity(client, auth, types: str = "email.unsubscribed") -> list[dict]:  # type: ignore[no-untyped-def]
    response = client.get("/activity", query_string={"types": types, "limit": 1000}, headers=auth)
    assert response.status_code == 200, response.data
    return list(response.json["items"])


def test_a_click_moves_the_recipient_and_fires_one_webhook_the_feed_shows(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["unsubscribed"])
    job_id = sent_bulk(client, auth, conn, "Ann@Example.org", "bob@example.org")
    set_status(conn, job_id, "delivered")
    token = token_for(conn, app_id, job_id, "ann@example.org")

    assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200

    assert statuses(client, auth, job_id) == {"Ann@Example.org": "unsubscribed", "bob@example.org": "delivered"}
    [item] = activity(client, auth)
    assert item["data"]["recipient"] == "Ann@Example.org" and item["data"]["job_id"] == job_id
    [(_, kind, body)] = messages(conn)
    assert kind == "email.unsubscribed" == item["type"]
    assert body["data"]["event"]["type"] == "unsubscribed" and body["data"]["event"]["at"]
    for key in ("job_id", "recipient", "message_id", "status", "metadata"):
        assert body["data"][key] == item["data"][key], key
    assert body["data"]["message_id"] == str(BIG_ID) and body["data"]["metadata"] == {"list": "weekly"}
    assert deliveries(conn) == [(HOOK, "email.unsubscribed", "pending")]
    assert conn.execute("SELECT email, scope, source FROM suppressions").fetchall() == [
        ("ann@example.org", "bulk", "unsubscribe")]

    assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200  # a second click: nothing new
    assert len(activity(client, auth)) == 1 and len(messages(conn)) == 1
    assert deliveries(conn) == [(HOOK, "email.unsubscribed", "pending")]


def test_a_token_whose_message_is_gone_still_suppresses_and_fires_once(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["*"])
    token = token_for(conn, app_id, str(uuid.uuid4()), "ann@example.org")  # deleted by retention, say
    for _ in range(2):
        assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200
    assert conn.execute("SELECT scope FROM suppressions").fetchall() == [("bulk",)]
    [(_, kind, body)] = messages(conn)
    assert kind == "email.unsubscribed" and body["data"]["message_id"] is None
    assert body["data"]["event"]["source"] == "one-click"
    assert deliveries(conn) == [(HOOK, "email.unsubscribed", "pending")]
    assert activity(client, auth) == []


def test_a_recipient_already_spam_stays_spam(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["*"])
    job_id = sent_bulk(client, auth, conn, "ann@example.org")
    set_status(conn, job_id, "spam")
    before = len(messages(conn))
    assert client.post(f"/unsubscribe/{token_for(conn, app_id, job_id, 'ann@example.org')}").status_code == 200
    assert statuses(client, auth, job_id) == {"ann@example.org": "spam"}
    assert activity(client, auth) == []
    # The entry is new, so the unsubscribe still fires its one email.unsubscribed (by hand: no status moved).
    assert [kind for _, kind, _ in messages(conn)[before:]] == ["email.unsubscribed"]


def test_an_address_already_on_the_list_still_moves_its_recipient_once(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["unsubscribed"])
    client.post("/suppressions", json={"email": "ann@example.org"}, headers=auth)
    job_id = sent_bulk(client, auth, conn, "ann@example.org")
    token = token_for(conn, app_id, job_id, "ann@example.org")
    for _ in range(2):
        assert client.post(f"/unsubscribe/{token}").json["scope"] == "all"
    assert statuses(client, auth, job_id) == {"ann@example.org": "unsubscribed"}
    assert [kind for _, kind, _ in messages(conn)] == ["email.unsubscribed"]


def test_mailjet_s_unsub_and_the_link_agree(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["unsubscribed"])
    linked = sent_bulk(client, auth, conn, "ann@example.org")
    by_mailjet = sent_bulk(client, auth, conn, "bob@example.org")
    conn.execute("UPDATE recipients SET message_id = %s WHERE job_id = %s", (BIG_ID + 100, by_mailjet))
    client.post(f"/unsubscribe/{token_for(conn, app_id, linked, 'ann@example.org')}")
    post_events(client, [{"event": "unsub", "time": int(time.time()), "MessageID": BIG_ID + 100,
                          "email": "bob@example.org"}])
    # The same status, the same webhook type; Mailjet's event says so in data.event.mailjet_event.
    assert statuses(client, auth, linked) == {"ann@example.org": "unsubscribed"}
    assert statuses(client, auth, by_mailjet) == {"bob@example.org": "unsubscribed"}
    kinds = {body["data"]["recipient"]: (kind, body["data"]["event"].get("mailjet_event"))
             for _, kind, body in messages(conn)}
    assert kinds == {"ann@example.org": ("email.unsubscribed", None),
                     "bob@example.org": ("email.unsubscribed", "unsub")}
    # Mailjet's unsub after the link's: the status stays, and nothing fires a second time.
    post_events(client, [{"event": "unsub", "time": int(time.time()), "MessageID": BIG_ID,
                          "email": "ann@example.org"}])
    assert len(messages(conn)) == 2
    assert len(activity(client, auth)) == 2


def test_a_click_and_mailjet_s_unsub_at_once_cannot_deadlock(client, auth, conn, database_url, app_id, monkeypatch):
    # Mailjet's unsub (mailer_record_events) locks the recipient, then writes the suppression. The link's
    # transaction takes them in the same order: here Mailjet's event arrives between the link's two writes and
    # waits for the recipient's lock, and the link commits. In the other order they would deadlock.
    from mailer import store
    from mailer.mailjet.events import parse_events
    from mailer.services import tracking

    job_id = sent_bulk(client, auth, conn, "ann@example.org")
    token = token_for(conn, app_id, job_id, "ann@example.org")
    event = json.dumps([{"event": "unsub", "time": int(time.time()), "MessageID": BIG_ID,
                         "email": "ann@example.org"}]).encode()
    outcome: list[object] = []
    original = store.insert_suppression

    def mailjet() -> None:
        with psycopg.connect(database_url, autocommit=True) as other:
            outcome.append(other.info.backend_pid)
            try:
                outcome.append(tracking.record_events(other, parse_events(event)))
            except psycopg.Error as exc:
                outcome.append(exc)

    def then_mailjet(*args, **kwargs):  # type: ignore[no-untyped-def]
        added = original(*args, **kwargs)
        thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and thread.is_alive():
            if len(outcome) == 1 and watcher.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (outcome[0],)
            ).fetchone() == (True,):
                waited.append(True)
                break
            time.sleep(0.02)
        return added

    thread = threading.Thread(target=mailjet)
    waited: list[bool] = []
    monkeypatch.setattr(store, "insert_suppression", then_mailjet)
    with psycopg.connect(database_url, autocommit=True) as watcher:
        result = unsubscribe.unsubscribe(conn, token)
    thread.join(timeout=30)

    assert waited == [True]  # Mailjet's event waited for the link's lock on the recipient
    assert result["scope"] == "bulk" and not thread.is_alive()
    assert isinstance(outcome[1], tracking.Recorded), outcome
    assert statuses(client, auth, job_id) == {"ann@example.org": "unsubscribed"}
    # Mailjet's unsub widens the link's entry to all mail (migration 0041), as it does any bulk-only entry.
    assert conn.execute("SELECT scope FROM suppressions").fetchall() == [("all",)]


def test_only_the_first_to_recipient_moves_not_the_same_address_in_cc_or_again_in_to(client, auth, conn, app_id):
    register(client, auth, HOOK, ["unsubscribed"])
    job_id = sent_bulk(client, auth, conn, "bob@example.org", "ann@example.org", "ANN@example.org",
                       cc=("Ann@Example.org",))
    set_status(conn, job_id, "delivered")
    assert client.post(f"/unsubscribe/{token_for(conn, app_id, job_id, 'ann@example.org')}").status_code == 200
    moved = conn.execute("SELECT kind, position, status FROM recipients WHERE job_id = %s ORDER BY kind, position",
                         (job_id,)).fetchall()
    assert moved == [("cc", 0, "delivered"), ("to", 0, "delivered"), ("to", 1, "unsubscribed"),
                     ("to", 2, "delivered")]
    assert len(activity(client, auth)) == 1  # one click, one change, one webhook
    assert [kind for _, kind, _ in messages(conn)] == ["email.unsubscribed"]


def test_a_pending_recipient_of_a_requeued_job_is_left_to_the_sender(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["unsubscribed"])
    job_id = sent_bulk(client, auth, conn, "ann@example.org", sent=False)
    assert client.post(f"/unsubscribe/{token_for(conn, app_id, job_id, 'ann@example.org')}").status_code == 200
    # Still pending: the sender finds the address on the list and makes it `suppressed`, not the link.
    assert statuses(client, auth, job_id) == {"ann@example.org": "pending"}
    assert activity(client, auth) == []
    # No status moved and the entry is new: the one email.unsubscribed is sent by hand.
    assert [kind for _, kind, _ in messages(conn)] == ["email.unsubscribed"]


def _plan_nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _plan_nodes(child))]


def test_the_update_plans_and_locks_one_month_partition_of_recipients(client, auth, conn, app_id) -> None:
    from mailer.store.queries import query

    conn.execute("SELECT mailer_ensure_month_partitions('recipients', 'uuid7', '2024-01-01', '2026-12-01')")
    job_id = sent_bulk(client, auth, conn, "ann@example.org")
    params = {"app_id": app_id, "job_id": uuid.UUID(job_id), "email": "ann@example.org"}
    with conn.transaction() as tx:
        [[plan]] = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + query("unsubscribe_recipients"), params).fetchone()  # type: ignore[misc]
        locked = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' "
            "AND relation::regclass::text LIKE 'recipients%%'").fetchone()
        raise psycopg.Rollback(tx)
    [update] = [node for node in _plan_nodes(plan["Plan"]) if node["Node Type"] == "ModifyTable"]
    targets = [t["Relation Name"] for t in update.get("Target Tables", [update])]
    assert len(targets) == 1 and targets[0].startswith("recipients_"), targets
    assert locked is not None and locked[0] < 40, locked  # one partition and its indexes (15), not 36 months of them


def test_each_messages_link_fires_for_its_own_recipient_and_a_repeat_fires_none(client, auth, conn, app_id) -> None:
    # What README and the OpenAPI text say: one email.unsubscribed per message's recipient a link unsubscribes.
    register(client, auth, HOOK, ["unsubscribed"])
    first, second = (sent_bulk(client, auth, conn, "ann@example.org") for _ in range(2))
    for job_id in (first, second, first, second):
        assert client.post(f"/unsubscribe/{token_for(conn, app_id, job_id, 'ann@example.org')}").status_code == 200
    assert [body["data"]["job_id"] for _, _, body in messages(conn)] == [first, second]
    assert statuses(client, auth, first) == statuses(client, auth, second) == {"ann@example.org": "unsubscribed"}
    assert "per message's recipient" in client.get("/openapi.json").text
