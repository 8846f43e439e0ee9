"""POST /events: Mailjet's callbacks are authenticated, kept once, applied in any order, and
matched to their recipient even when they arrive before the send result is stored."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import json
import pathlib
import time
import uuid

import psycopg
import pytest

from mailer import pgcluster, store
from mailer.mailjet import events as mailjet_events
from mailer.services import tracking
from tests.conftest import EVENTS_AUTH
from tests.integration.conftest import app_with
from tests.integration.sending_support import run_sender

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
# A Mailjet `time` (unix seconds): an hour ago, since mailjet_events is partitioned by it and an implausible
# time gives way to the arrival (mailer/mailjet/events.py).
T0 = int(time.time()) - 3600
BIG_ID = 2**60 + 7  # MessageIDs are above 2**53: a float would lose the last digits


def basic(credentials: str = EVENTS_AUTH) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


MAILJET = basic()


def message(**extra: object) -> dict:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Invoice",
            "text": "hi", **extra}


def event(name: str, *, at: int, message_id: int | str | None = None, email: str = "ann@example.org",
          custom_id: str | None = None, **extra: object) -> dict:
    raw: dict = {"event": name, "time": at, "email": email, "mj_campaign_id": 1, **extra}
    if message_id is not None:
        raw["MessageID"] = message_id
    if custom_id is not None:
        raw["CustomID"] = custom_id
    return raw


def rfc3339(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def post_events(client, payload, headers=MAILJET):
    data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return client.post("/events", data=data, headers=headers, content_type="application/json")


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.data
    body = response.get_json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code


def count_events(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM mailjet_events").fetchone()[0]


def queue(client, auth, **extra) -> str:
    response = client.post("/queue", json=message(**extra), headers=auth)
    assert response.status_code == 202
    return response.json["id"]


def mark_sent(conn: psycopg.Connection, job_id: str, message_id: int, kind: str = "to", position: int = 0) -> None:
    """What the sender records for an accepted message (services/send_recording.py `record`)."""
    store.set_recipient_message_ids(
        conn, recipients=[{"job_id": job_id, "kind": kind, "position": position, "message_id": message_id,
                           "message_uuid": f"uuid-{message_id}"}]
    )
    matched = store.apply_pending_events(conn, message_ids=[message_id], job_ids=[uuid.UUID(job_id)])
    store.advance_recipient_statuses(conn, recipient_ids=matched.recipient_ids, job_ids=matched.job_ids)
    store.suppress_from_events(conn, event_ids=matched.event_ids)


def recipient(client, auth, job_id: str, index: int = 0) -> dict:
    response = client.get(f"/status/{job_id}", headers=auth)
    assert response.status_code == 200
    return response.json["recipients"][index]


# --- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("mailjet:wrong"),
        basic("other:events-secret"),
        basic("mailjet"),
        basic(EVENTS_AUTH + "x"),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Bearer " + base64.b64encode(EVENTS_AUTH.encode()).decode()},
        {"Authorization": base64.b64encode(EVENTS_AUTH.encode()).decode()},
    ],
    ids=["no header", "wrong password", "wrong user", "no password", "longer password", "bad base64", "bearer",
         "no scheme"],
)
def test_bad_credentials_are_401(client, conn, headers):
    assert_error(post_events(client, event("open", at=T0), headers), 401, "unauthorized")
    assert count_events(conn) == 0


def test_events_are_refused_while_events_auth_is_unset(settings, conn):
    with app_with(settings, events_auth=None) as application:
        client = application.test_client()
        for headers in ({}, MAILJET, basic(":"), basic("")):
            assert_error(post_events(client, event("open", at=T0), headers), 401, "unauthorized")
    assert count_events(conn) == 0


def test_the_scheme_is_case_insensitive(client):
    headers = {"Authorization": "basic " + base64.b64encode(EVENTS_AUTH.encode()).decode()}
    assert post_events(client, event("open", at=T0), headers).status_code == 200


def test_events_need_no_api_key(client, auth):
    # Mailjet has no API key of ours: a Bearer key is not a way in.
    assert_error(post_events(client, event("open", at=T0), auth), 401, "unauthorized")


# --- bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"", b'{"event": "open"', b"42", b'"open"', b"null", b"true", b'[{"event": "open"}, 3]',
     b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000],
    ids=["text", "empty", "truncated", "number", "string", "null", "bool", "array with a number", "not utf-8",
         "nested too deep"],
)
def test_a_body_that_is_not_events_is_400(client, conn, raw):
    assert_error(post_events(client, raw), 400, "malformed_request")
    assert count_events(conn) == 0


def test_an_empty_array_is_fine(client, conn):
    response = post_events(client, [])
    assert response.status_code == 200
    assert response.json == {"received": 0, "new": 0, "matched": 0}


def test_the_grouped_fixture_is_kept_although_no_message_is_known(client, conn):
    raw = (FIXTURES / "webhook_v2.json").read_bytes()
    response = post_events(client, raw)
    assert response.status_code == 200
    assert response.json == {"received": 7, "new": 7, "matched": 0}
    rows = conn.execute(
        "SELECT name, status, message_id, custom_id, suppresses, recipient_id, applied_at"
        " FROM mailjet_events ORDER BY id"
    ).fetchall()
    assert [(name, status) for name, status, *_ in rows] == [
        ("sent", "delivered"), ("open", "opened"), ("click", "clicked"), ("bounce", "bounced"), ("spam", "spam"),
        ("blocked", "blocked"), ("unsub", "unsubscribed"),
    ]
    assert all(recipient_id is None and applied_at is None for *_, recipient_id, applied_at in rows)
    assert rows[0][2] == 288230379609003794  # exact: never through a float
    assert rows[0][3] == "order-1001"
    assert [row[4] for row in rows] == [False, False, False, True, True, True, True]
    payload = conn.execute("SELECT payload FROM mailjet_events WHERE name = 'click'").fetchone()[0]
    assert payload["url"] == "https://shop.example.com/orders/1001"


def test_a_single_event_object_is_accepted(client, conn):
    response = post_events(client, event("open", at=T0, message_id=BIG_ID))
    assert response.status_code == 200
    assert response.json == {"received": 1, "new": 1, "matched": 0}
    assert conn.execute("SELECT name, status, message_id FROM mailjet_events").fetchall() == [
        ("open", "opened", BIG_ID)
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event": "open", "time": 1755500000, "MessageID": 99999999999999999999}',
        b'{"event": "open", "time": NaN, "MessageID": 1}',
        b'{"event": "open", "time": 1755500000, "ip": 1e400}',
        b'{"event": "open", "time": 1755500000, "email": "\\ud800@example.org"}',
        b'{"event": "open", "time": 1755500000, "agent": "a\\u0000b"}',
        b'{"event": "teleport", "time": 1755500000}',
        b'{"time": "yesterday", "MessageID": "x"}',
        b'{"event": ["open"], "time": {}, "MessageID": 1.5e20, "CustomID": {"a": 1}, "email": 7}',
    ],
    ids=["MessageID above bigint", "NaN time", "infinite number", "lone surrogate", "NUL", "unknown event",
         "bad field types", "nested field types"],
)
def test_an_odd_event_is_kept_not_retried_forever(client, conn, raw):
    # Mailjet retries anything but a 200 for a day: an event we cannot use must still be a 200.
    response = post_events(client, raw)
    assert response.status_code == 200, response.data
    assert response.json["new"] == 1
    assert count_events(conn) == 1


def test_an_unreachable_database_is_503_so_mailjet_retries(settings):
    dead = f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/mailer"
    with app_with(settings, database_url=dead, db_timeout_s=0.3) as application:
        response = post_events(application.test_client(), event("open", at=T0))
        assert_error(response, 503, "database_unavailable")


# --- duplicates and order ---------------------------------------------------------------------------------


def test_a_batch_posted_twice_is_applied_once(client, auth, conn):
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    batch = [event("sent", at=T0, message_id=BIG_ID), event("open", at=T0 + 60, message_id=BIG_ID)]
    first = post_events(client, batch)
    again = post_events(client, batch)
    assert first.json == {"received": 2, "new": 2, "matched": 2}
    assert again.json == {"received": 2, "new": 0, "matched": 0}
    assert count_events(conn) == 2
    assert recipient(client, auth, job_id)["events"] == [
        {"type": "delivered", "at": rfc3339(T0)}, {"type": "opened", "at": rfc3339(T0 + 60)}
    ]


def test_a_duplicate_inside_one_batch_is_kept_once(client, conn):
    same = event("open", at=T0, message_id=BIG_ID)
    response = post_events(client, [same, dict(same), dict(reversed(list(same.items())))])
    assert response.json == {"received": 3, "new": 1, "matched": 0}
    assert count_events(conn) == 1


def test_the_same_event_at_another_time_is_another_event(client, conn):
    response = post_events(client, [event("open", at=T0, message_id=1), event("open", at=T0 + 1, message_id=1)])
    assert response.json["new"] == 2


def test_an_open_before_sent_still_ends_opened_with_both_in_time_order(client, auth, conn):
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    assert post_events(client, event("open", at=T0 + 60, message_id=BIG_ID)).json["matched"] == 1
    assert recipient(client, auth, job_id)["status"] == "opened"
    assert post_events(client, event("sent", at=T0, message_id=BIG_ID)).json["matched"] == 1
    shown = recipient(client, auth, job_id)
    assert shown["status"] == "opened"
    assert shown["events"] == [{"type": "delivered", "at": rfc3339(T0)}, {"type": "opened", "at": rfc3339(T0 + 60)}]


def test_a_bounce_after_an_open_does_not_move_the_status_back(client, auth, conn):
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    post_events(client, [event("sent", at=T0, message_id=BIG_ID), event("open", at=T0 + 60, message_id=BIG_ID)])
    bounce = event("bounce", at=T0 + 120, message_id=BIG_ID, hard_bounce=True, error="user unknown")
    assert post_events(client, bounce).json["matched"] == 1
    shown = recipient(client, auth, job_id)
    assert shown["status"] == "opened"
    assert [e["type"] for e in shown["events"]] == ["delivered", "opened", "bounced"]


def test_a_click_moves_an_opened_recipient_forward(client, auth, conn):
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    post_events(client, event("open", at=T0, message_id=BIG_ID))
    post_events(client, event("click", at=T0 + 5, message_id=BIG_ID, url="https://example.com/"))
    assert recipient(client, auth, job_id)["status"] == "clicked"


@pytest.mark.parametrize(
    ("raw_event", "status"),
    [
        ({"event": "bounce", "hard_bounce": False, "error": "mailbox full"}, "deferred"),
        ({"event": "bounce", "hard_bounce": True, "error": "user unknown"}, "bounced"),
        ({"event": "blocked", "error": "preblocked"}, "blocked"),
        ({"event": "spam", "source": "JMRPP"}, "spam"),
        ({"event": "unsub", "mj_list_id": 1}, "unsubscribed"),
        ({"event": "sent", "smtp_reply": "250 OK"}, "delivered"),
    ],
    ids=["soft bounce", "hard bounce", "blocked", "spam", "unsub", "sent"],
)
def test_mailjet_event_names_map_to_recipient_statuses(client, auth, conn, raw_event, status):
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    post_events(client, {**event("x", at=T0, message_id=BIG_ID), **raw_event})
    shown = recipient(client, auth, job_id)
    assert shown["status"] == status
    assert shown["events"] == [{"type": status, "at": rfc3339(T0)}]


def test_a_soft_bounce_then_delivery_ends_delivered(client, auth, conn):
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    post_events(client, event("bounce", at=T0, message_id=BIG_ID, hard_bounce=False))
    assert recipient(client, auth, job_id)["status"] == "deferred"
    post_events(client, event("sent", at=T0 + 600, message_id=BIG_ID))
    shown = recipient(client, auth, job_id)
    assert shown["status"] == "delivered"
    assert [e["type"] for e in shown["events"]] == ["deferred", "delivered"]


def test_an_event_for_one_recipient_leaves_the_others_alone(client, auth, conn):
    job_id = queue(client, auth, cc=[{"email": "cy@example.org"}])
    mark_sent(conn, job_id, BIG_ID)
    mark_sent(conn, job_id, BIG_ID + 1, kind="cc")
    post_events(client, event("open", at=T0, message_id=BIG_ID + 1, email="cy@example.org"))
    to, cc = client.get(f"/status/{job_id}", headers=auth).json["recipients"]
    assert (to["status"], to["events"]) == ("sent", [])
    assert (cc["kind"], cc["status"]) == ("cc", "opened")


# --- events that arrive before the send result ---------------------------------------------------------------


def test_an_event_with_our_custom_id_is_matched_before_the_send_result(client, auth, conn, send_settings):
    job_id = queue(client, auth)
    early = event("open", at=T0 + 60, custom_id=job_id, email="ANN@example.org")  # Mailjet may change the case
    assert post_events(client, early).json == {"received": 1, "new": 1, "matched": 1}
    assert recipient(client, auth, job_id)["status"] == "opened"

    assert run_sender(send_settings).sent == 1
    shown = recipient(client, auth, job_id)
    assert shown["status"] == "opened"  # the send result does not move it back to `sent`
    message_id = int(shown["message_id"])
    assert message_id > 2**53

    assert post_events(client, event("sent", at=T0, message_id=message_id)).json["matched"] == 1
    shown = recipient(client, auth, job_id)
    assert shown["status"] == "opened"
    assert shown["events"] == [{"type": "delivered", "at": rfc3339(T0)}, {"type": "opened", "at": rfc3339(T0 + 60)}]


def test_an_address_listed_twice_gets_each_copy_its_own_message_id_from_custom_id_events(client, auth, conn):
    # The lookup before a resend found the message but Mailjet listed only the To copy: the Cc copy's MessageID
    # comes with its first event, which carries our CustomID and the (same) address.
    job_id = queue(client, auth, cc=[{"email": "ann@example.org"}])
    mark_sent(conn, job_id, BIG_ID)  # the To copy
    cc_event = event("sent", at=T0, message_id=BIG_ID + 1, custom_id=job_id)
    assert post_events(client, cc_event).json["matched"] == 1
    to_copy, cc_copy = recipient(client, auth, job_id, 0), recipient(client, auth, job_id, 1)
    assert (to_copy["message_id"], cc_copy["message_id"]) == (str(BIG_ID), str(BIG_ID + 1))
    assert (to_copy["status"], cc_copy["status"]) == ("sent", "delivered")


def test_a_custom_id_that_is_not_ours_matches_nothing(client, auth, conn):
    job_id = queue(client, auth)
    response = post_events(client, [event("open", at=T0, custom_id="order-1001"),
                                    event("open", at=T0, custom_id=job_id, email="someone-else@example.org")])
    assert response.json == {"received": 2, "new": 2, "matched": 0}
    assert recipient(client, auth, job_id)["status"] == "pending"


def test_an_event_with_only_the_message_id_is_applied_after_the_send(client, auth, conn, send_settings):
    job_id = queue(client, auth)
    assert run_sender(send_settings).sent == 1
    (message_id,) = conn.execute("SELECT message_id FROM recipients WHERE job_id = %s", (job_id,)).fetchone()
    assert message_id > 2**53
    assert post_events(client, event("sent", at=T0, message_id=message_id)).json["matched"] == 1
    shown = recipient(client, auth, job_id)
    assert (shown["status"], shown["message_id"]) == ("delivered", str(message_id))


def engagement_counts(conn: psycopg.Connection) -> dict[str, int]:
    """/stats' recipient counters (migrations 0042, 0045), summed over apps, days and shards."""
    return dict(conn.execute(
        "SELECT kind, sum(count)::int FROM job_counts WHERE kind <> ALL ('{created,sent}') GROUP BY kind"
    ).fetchall())


def test_an_event_that_arrives_before_its_message_id_is_applied_once_it_is_known(client, auth, conn):
    job_id = queue(client, auth)
    response = post_events(client, [event("sent", at=T0, message_id=BIG_ID),
                                    event("open", at=T0 + 30, message_id=str(BIG_ID)),
                                    event("unsub", at=T0 + 60, message_id=BIG_ID, mj_list_id=1)])
    assert response.json == {"received": 3, "new": 3, "matched": 0}
    assert conn.execute("SELECT count(*) FROM mailjet_events WHERE applied_at IS NULL").fetchone()[0] == 3
    assert recipient(client, auth, job_id)["status"] == "pending"

    mark_sent(conn, job_id, BIG_ID)  # the send result lands after its events

    shown = recipient(client, auth, job_id)
    assert shown["status"] == "unsubscribed"
    assert shown["events"] == [{"type": "delivered", "at": rfc3339(T0)}, {"type": "opened", "at": rfc3339(T0 + 30)},
                               {"type": "unsubscribed", "at": rfc3339(T0 + 60)}]
    assert conn.execute("SELECT count(*) FROM mailjet_events WHERE applied_at IS NULL").fetchone()[0] == 0
    # Every milestone of the events applied at once, the open too (0045), not only those of the status.
    assert engagement_counts(conn) == {"delivered": 1, "opened": 1, "unsubscribed": 1}
    # Applying the same send result again changes nothing (the sender may record twice after a crash).
    mark_sent(conn, job_id, BIG_ID)
    assert recipient(client, auth, job_id)["events"] == shown["events"]
    assert engagement_counts(conn) == {"delivered": 1, "opened": 1, "unsubscribed": 1}


def test_message_ids_are_exact_strings_in_status(client, auth, conn):
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    response = client.get(f"/status/{job_id}", headers=auth)
    assert response.json["recipients"][0]["message_id"] == "1152921504606846983"
    assert b'"message_id":"1152921504606846983"' in response.data.replace(b" ", b"")


def test_the_largest_bigint_message_id_round_trips(client, auth, conn):
    largest = 2**63 - 1
    job_id = queue(client, auth)
    post_events(client, event("open", at=T0, message_id=largest))
    mark_sent(conn, job_id, largest)
    shown = recipient(client, auth, job_id)
    assert (shown["message_id"], shown["status"]) == (str(largest), "opened")


# --- concurrency ------------------------------------------------------------------------------------


def test_two_event_posts_racing_for_one_recipient_never_move_it_backwards(client, auth, conn, database_url):
    """A click and an open for one recipient stored at once: the open's transaction started before the click
    committed (so it does not see it) and waits for the recipient's row; once the click commits, the open must
    not take the status back to `opened`."""
    job_id = queue(client, auth)
    mark_sent(conn, job_id, BIG_ID)
    click = mailjet_events.to_event(event("click", at=T0 + 5, message_id=BIG_ID, url="https://example.com/"))
    opened = mailjet_events.to_event(event("open", at=T0, message_id=BIG_ID))
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        second_pid = second.info.backend_pid
        assert tracking.record_events(first, [click]).matched == 1  # its transaction holds the recipient's row
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            racing = pool.submit(lambda: (tracking.record_events(second, [opened]), second.commit()))
            waiting = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
            deadline = time.monotonic() + 10
            while conn.execute(waiting, (second_pid,)).fetchone() != ("Lock",):
                assert not racing.done(), racing.result()  # it must wait for the row, not finish first
                assert time.monotonic() < deadline, "the open never waited for the click's row lock"
                time.sleep(0.01)
            first.commit()
            recorded, _ = racing.result(timeout=10)
    assert recorded.matched == 1
    shown = recipient(client, auth, job_id)
    assert shown["status"] == "clicked"
    assert [e["type"] for e in shown["events"]] == ["opened", "clicked"]
