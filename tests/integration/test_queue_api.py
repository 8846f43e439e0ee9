"""POST /queue: what it accepts, what it refuses (always in the one error shape), and that a 202
is durable, atomic, idempotent and private to the app that asked."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import uuid
from collections.abc import Iterator

import flask
import psycopg
import pytest
from psycopg import sql

import mailer
from mailer import pgcluster, store
from mailer.services import apps, queueing
from tests.integration.conftest import make_key

SEND_TASK = "mailer.send_due_jobs"
TABLES = ("jobs", "recipients", "job_events", "procrastinate_jobs", "idempotency_keys")


def message(**extra: object) -> dict:
    return {
        "from": {"email": "billing@example.com", "name": "Billing"},
        "to": [{"email": "ann@example.org", "name": "Ann"}],
        "subject": "Your invoice",
        "text": "plain part",
        **extra,
    }


def without(key: str) -> dict:
    body = message()
    del body[key]
    return body


def assert_error(response, status: int, code: str) -> dict:
    """The response is the documented error shape; its details."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]["details"]


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def stored(conn: psycopg.Connection) -> dict[str, int]:
    return {table: count(conn, table) for table in TABLES}


NOTHING = dict.fromkeys(TABLES, 0)


def post(client, body, headers, **extra_headers):
    if isinstance(body, bytes | str):
        return client.post("/queue", data=body, headers={**headers, **extra_headers}, content_type="application/json")
    return client.post("/queue", json=body, headers={**headers, **extra_headers})


def in_hours(hours: float, offset_hours: int = 1) -> dt.datetime:
    zone = dt.timezone(dt.timedelta(hours=offset_hours))
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).astimezone(zone)


@contextlib.contextmanager
def app_with(settings, **changes) -> Iterator[flask.Flask]:
    application = mailer.create_app(dataclasses.replace(settings, **changes))
    try:
        yield application
    finally:
        application.extensions["mailer.pool"].close()


# --- accepted ---------------------------------------------------------------------------------


def test_one_message_is_accepted_and_stored(client, auth, conn):
    response = post(client, message(), auth)
    assert response.status_code == 202
    assert response.get_json() == {"id": response.json["id"], "status": "queued"}
    job_id = uuid.UUID(response.json["id"])
    row = conn.execute(
        "SELECT j.status, j.priority, j.message->>'subject', a.name FROM jobs j JOIN apps a ON a.id = j.app_id "
        "WHERE j.id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("queued", "transactional", "Your invoice", "billing")
    assert conn.execute("SELECT kind, email, name, status FROM recipients WHERE job_id = %s", (job_id,)).fetchall() == [
        ("to", "ann@example.org", "Ann", "pending")
    ]


def test_a_batch_answers_its_jobs_in_input_order(client, auth, conn):
    subjects = [f"message {i}" for i in range(5)]
    response = post(client, {"messages": [message(subject=s) for s in subjects]}, auth)
    assert response.status_code == 202
    assert list(response.json) == ["jobs"]
    jobs = response.json["jobs"]
    assert [job["status"] for job in jobs] == ["queued"] * 5
    assert len({job["id"] for job in jobs}) == 5
    stored_subjects = [
        conn.execute("SELECT message->>'subject' FROM jobs WHERE id = %s", (job["id"],)).fetchone()[0] for job in jobs
    ]
    assert stored_subjects == subjects


def test_job_ids_are_time_ordered_uuids(client, auth):
    first = post(client, message(), auth).json["id"]
    batch = [job["id"] for job in post(client, {"messages": [message()] * 3}, auth).json["jobs"]]
    assert {uuid.UUID(job_id).version for job_id in [first, *batch]} == {7}
    assert all(first[:13] <= job_id for job_id in batch)  # milliseconds first: a later request sorts after


def test_a_batch_of_one_still_answers_a_list(client, auth):
    response = post(client, {"messages": [message()]}, auth)
    assert response.status_code == 202
    assert [set(job) for job in response.json["jobs"]] == [{"id", "status"}]


def test_send_at_in_the_future_is_scheduled(client, auth, conn):
    send_at = in_hours(24)
    response = post(client, message(send_at=send_at.isoformat()), auth)
    assert response.status_code == 202
    assert response.json["status"] == "scheduled"
    row = conn.execute("SELECT status, send_at, run_at FROM jobs WHERE id = %s", (response.json["id"],)).fetchone()
    assert row == ("scheduled", send_at, send_at)


def test_send_at_in_the_past_means_now(client, auth, conn):
    send_at = in_hours(-24, offset_hours=-5)
    response = post(client, message(send_at=send_at.isoformat()), auth)
    assert response.status_code == 202
    assert response.json["status"] == "queued"
    status, run_at = conn.execute("SELECT status, run_at FROM jobs WHERE id = %s", (response.json["id"],)).fetchone()
    assert status == "queued"
    assert run_at > send_at + dt.timedelta(hours=23)


def test_send_at_in_utc_with_z_is_accepted(client, auth):
    send_at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = post(client, message(send_at=send_at), auth)
    assert response.status_code == 202
    assert response.json["status"] == "scheduled"


def test_a_batch_mixes_scheduled_and_queued(client, auth):
    batch = {"messages": [message(), message(send_at=in_hours(5).isoformat()), message()]}
    response = post(client, batch, auth)
    assert response.status_code == 202
    assert [job["status"] for job in response.json["jobs"]] == ["queued", "scheduled", "queued"]


def test_exactly_fifty_recipients_are_accepted(client, auth):
    people = [{"email": f"p{i}@example.org"} for i in range(50)]
    response = post(client, message(to=people[:20], cc=people[20:40], bcc=people[40:]), auth)
    assert response.status_code == 202


def test_a_batch_of_five_hundred_is_accepted(client, auth, conn):
    response = post(client, {"messages": [message() for _ in range(500)]}, auth)
    assert response.status_code == 202
    assert len(response.json["jobs"]) == 500
    assert count(conn, "jobs") == 500


def test_a_literal_backslash_u0000_is_text_not_nul(client, auth, conn):
    # The JSON string "a\\u0000" is the six characters a \ u 0 0 0 0; nothing is wrong with it.
    response = post(client, message(text="a\\u0000"), auth)
    assert response.status_code == 202
    stored_text = conn.execute("SELECT message->>'text' FROM jobs WHERE id = %s", (response.json["id"],)).fetchone()[0]
    assert stored_text == "a\\u0000"


def test_a_message_with_every_field_is_accepted(client, auth, conn):
    body = message(
        cc=[{"email": "cc@example.org"}],
        bcc=[{"email": "bcc@example.org"}],
        reply_to={"email": "support@example.com"},
        html="<p>html part</p>",
        template_id=123,
        variables={"name": "Ann"},
        attachments=[{"filename": "a.pdf", "content_type": "application/pdf", "content": "JVBERi0xLjQK"}],
        headers={"X-Order": "1001"},
        metadata={"order_id": 1001},
        priority="bulk",
    )
    response = post(client, body, auth)
    assert response.status_code == 202
    stored_message, priority = conn.execute(
        "SELECT message, priority FROM jobs WHERE id = %s", (response.json["id"],)
    ).fetchone()
    assert priority == "bulk"
    assert stored_message["headers"] == {"X-Order": "1001"}
    assert stored_message["from"] == {"email": "billing@example.com", "name": "Billing"}
    assert stored_message["attachments"][0]["content"] == "JVBERi0xLjQK"
    assert count(conn, "recipients") == 3


# --- refused: bodies that are not JSON (400) -------------------------------------------------------

NOT_JSON = {
    "malformed": b'{"from": ',
    "empty": b"",
    "only whitespace": b"  \n ",
    "not utf-8": b'\xff\xfe{"subject": 1}',
    "latin-1 text": json.dumps(message(subject="Caf\u00e9"), ensure_ascii=False).encode("latin-1"),
    "NaN": json.dumps(message()).replace('"plain part"', "NaN").encode(),
    "Infinity": json.dumps(message(metadata={"x": 1})).replace("1}", "-Infinity}").encode(),
    "a number too big for a float": json.dumps(message(metadata={"x": 1})).replace("1}", "1e400}").encode(),
    "a lone surrogate": json.dumps(message()).replace("Your invoice", "\\ud800").encode(),
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("raw", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_body_that_is_not_json_is_400(client, auth, conn, raw):
    assert_error(post(client, raw, auth), 400, "malformed_request")
    assert stored(conn) == NOTHING


@pytest.mark.parametrize(
    "body", [[message()], "a string", 42, None, True], ids=["array", "string", "number", "null", "bool"]
)
def test_json_that_is_not_an_object_is_422(client, auth, conn, body):
    assert_error(post(client, json.dumps(body), auth), 422, "validation_error")
    assert stored(conn) == NOTHING


# --- refused: invalid messages (422, details naming the field) ----------------------------------------

PEOPLE = [{"email": f"p{i}@example.org"} for i in range(51)]

INVALID = {
    "no from": (without("from"), "from"),
    "no to": (without("to"), "to"),
    "no subject": (without("subject"), "subject"),
    "empty subject": (message(subject=""), "subject"),
    "no text, html or template_id": (without("text"), "text"),
    "empty text only": (message(text=""), "text"),
    "from not an email": (message(**{"from": {"email": "billing"}}), "from"),
    "to not an email": (message(to=[{"email": "ann@"}]), "to"),
    "to a bare string": (message(to=["ann@example.org"]), "to"),
    "cc not an email": (message(cc=[{"email": "not an address"}]), "cc"),
    "bcc not an email": (message(bcc=[{"email": "@example.org"}]), "bcc"),
    "reply_to not an email": (message(reply_to={"email": "x"}), "reply_to"),
    "CR in subject": (message(subject="Hi\rBcc: victim@example.org"), "subject"),
    "LF in subject": (message(subject="Hi\nBcc: victim@example.org"), "subject"),
    "CRLF in a header value": (message(headers={"X-Order": "1\r\nBcc: victim@example.org"}), "headers"),
    "LF in a display name": (message(to=[{"email": "ann@example.org", "name": "Ann\nBcc: x@example.org"}]), "to"),
    "CR in the from name": (message(**{"from": {"email": "billing@example.com", "name": "B\r"}}), "from"),
    "forbidden header Subject": (message(headers={"Subject": "x"}), "headers"),
    "forbidden header message-id": (message(headers={"message-id": "<x@example.com>"}), "headers"),
    "forbidden header MESSAGE-ID": (message(headers={"MESSAGE-ID": "<x@example.com>"}), "headers"),
    "forbidden header from": (message(headers={"from": "x@example.com"}), "headers"),
    "header name with a space": (message(headers={"X Order": "1"}), "headers"),
    "header name with a colon": (message(headers={"X-Order:": "1"}), "headers"),
    "empty header name": (message(headers={"": "1"}), "headers"),
    "header name with a trailing LF": (message(headers={"X-Order\n": "1"}), "headers"),
    "header name not ASCII": (message(headers={"X-\u00c4": "1"}), "headers"),
    "header value not a string": (message(headers={"X-Order": 1001}), "headers"),
    "51 recipients": (message(to=PEOPLE[:20], cc=PEOPLE[20:40], bcc=PEOPLE[40:]), "to"),
    "51 in to": (message(to=PEOPLE), "to"),
    "empty to": (message(to=[]), "to"),
    "to null": (message(to=None), "to"),
    "unknown field": (message(importance="high"), "importance"),
    "unknown field in an address": (message(to=[{"email": "ann@example.org", "nick": "A"}]), "to"),
    "bad base64 attachment": (
        message(attachments=[{"filename": "a.pdf", "content_type": "application/pdf", "content": "not base64!"}]),
        "attachments",
    ),
    "attachment content type with a trailing LF": (
        message(attachments=[{"filename": "a.txt", "content_type": "text/plain\n", "content": "aGk="}]),
        "attachments",
    ),
    "attachment without a filename": (
        message(attachments=[{"content_type": "text/plain", "content": "aGk="}]),
        "attachments",
    ),
    "template_id as a string": (message(template_id="123"), "template_id"),
    "template_id zero": (message(template_id=0), "template_id"),
    "template_id a float": (message(template_id=1.5), "template_id"),
    "priority urgent": (message(priority="urgent"), "priority"),
    "metadata too big": (message(metadata={"blob": "x" * 5000}), "metadata"),
    "metadata not an object": (message(metadata=[1, 2]), "metadata"),
    "naive send_at": (message(send_at="2030-12-01T09:00:00"), "send_at"),
    "send_at not a date": (message(send_at="tomorrow"), "send_at"),
    "send_at past year 9999 in UTC": (message(send_at="9999-12-31T23:30:00-01:00"), "send_at"),
    "send_at before year 1 in UTC": (message(send_at="0001-01-01T00:30:00+01:00"), "send_at"),
    "variables not an object": (message(template_id=1, variables=["Ann"]), "variables"),
}


@pytest.mark.parametrize(("body", "field"), INVALID.values(), ids=INVALID.keys())
def test_an_invalid_message_is_422_naming_the_field(client, auth, conn, body, field):
    details = assert_error(post(client, body, auth), 422, "validation_error")
    assert field in details
    assert stored(conn) == NOTHING


@pytest.mark.parametrize(
    "body",
    [message(subject="a\u0000b"), message(metadata={"k\u0000": 1}), {"messages": [message(), message(text="\u0000")]}],
    ids=["in a value", "in a key", "in a batch"],
)
def test_a_nul_character_is_422(client, auth, conn, body):
    assert_error(post(client, body, auth), 422, "validation_error")
    assert stored(conn) == NOTHING


def test_a_naive_send_at_says_why(client, auth):
    details = assert_error(post(client, message(send_at="2030-12-01T09:00:00"), auth), 422, "validation_error")
    assert details == {"send_at": ["Not a valid aware datetime."]}


def test_a_forbidden_header_names_the_header(client, auth):
    details = assert_error(post(client, message(headers={"Subject": "x"}), auth), 422, "validation_error")
    assert list(details["headers"]) == ["Subject"]


def test_too_many_recipients_says_how_many(client, auth):
    body = message(to=PEOPLE[:20], cc=PEOPLE[20:40], bcc=PEOPLE[40:])
    details = assert_error(post(client, body, auth), 422, "validation_error")
    assert "51" in details["to"][0]


# --- batches are validated whole --------------------------------------------------------------------


def test_a_batch_of_501_is_422(client, auth, conn):
    details = assert_error(post(client, {"messages": [message()] * 501}, auth), 422, "validation_error")
    assert "messages" in details
    assert stored(conn) == NOTHING


@pytest.mark.parametrize("messages", [[], None, "x", {"0": {}}], ids=["empty", "null", "string", "object"])
def test_a_batch_that_is_not_a_list_of_messages_is_422(client, auth, conn, messages):
    details = assert_error(post(client, {"messages": messages}, auth), 422, "validation_error")
    assert "messages" in details
    assert stored(conn) == NOTHING


def test_one_bad_message_rejects_the_whole_batch_naming_its_index(client, auth, conn):
    batch = [message(subject=f"m{i}") for i in range(6)]
    batch[3]["to"] = [{"email": "not-an-address"}]
    details = assert_error(post(client, {"messages": batch}, auth), 422, "validation_error")
    assert list(details) == ["messages"]
    assert list(details["messages"]) == ["3"]
    assert "to" in details["messages"]["3"]
    assert stored(conn) == NOTHING


def test_a_batch_with_an_unknown_top_level_field_is_422(client, auth, conn):
    details = assert_error(post(client, {"messages": [message()], "dry_run": True}, auth), 422, "validation_error")
    assert "dry_run" in details
    assert stored(conn) == NOTHING


# --- body size --------------------------------------------------------------------------------------


def test_a_body_above_the_limit_is_413(settings, api_key, conn):
    small = json.dumps(message()).encode()
    with app_with(settings, max_body_bytes=len(small) + 100) as application:
        client = application.test_client()
        auth = {"Authorization": f"Bearer {api_key}"}
        assert_error(post(client, json.dumps(message(text="x" * 500)), auth), 413, "payload_too_large")
        assert stored(conn) == NOTHING
        assert post(client, small, auth).status_code == 202


# --- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic YmlsbGluZzpzZWNyZXQ=", "Bearer", "Bearer ", "Token {key}", "Bearer wrong", "Bearer mk_abc_def",
     "Bearer {key}x", "Bearer {key_id}_forged-secret"],
    ids=["no header", "empty", "basic scheme", "bearer without key", "bearer blank", "other scheme", "garbage key",
         "unknown key id", "wrong secret", "right key id, wrong secret"],
)
def test_bad_credentials_are_401(client, api_key, conn, authorization):
    headers = {}
    if authorization is not None:
        key_id = api_key.split("_")[1]
        headers["Authorization"] = authorization.format(key=api_key, key_id=f"mk_{key_id}")
    response = post(client, message(), headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored(conn) == NOTHING


def test_a_revoked_key_is_401(client, auth, conn):
    assert post(client, message(), auth).status_code == 202
    apps.revoke_app(conn, "billing")
    assert_error(post(client, message(), auth), 401, "unauthorized")
    assert count(conn, "jobs") == 1


# A key this process authenticated once is recalled without a lookup; insert_jobs confirms it (api/auth.py).


@pytest.fixture
def key_lookups(monkeypatch) -> list[str]:
    """The key ids looked up in the database (the real lookup still runs)."""
    seen: list[str] = []
    lookup = store.get_app_by_key_id

    def counted(conn, *, key_id):
        seen.append(key_id)
        return lookup(conn, key_id=key_id)

    monkeypatch.setattr(store, "get_app_by_key_id", counted)
    return seen


def test_a_key_authenticated_once_is_not_looked_up_again_by_post_queue(client, auth, conn, key_lookups):
    assert post(client, message(), auth).status_code == 202
    assert len(key_lookups) == 1
    assert post(client, message(), auth).status_code == 202
    assert post(client, {"messages": [message(), message()]}, auth).status_code == 202
    assert len(key_lookups) == 1
    assert count(conn, "jobs") == 4
    # Every other endpoint, and a request with an Idempotency-Key (a replay reads before it writes), asks.
    assert client.get("/logs", headers=auth).status_code == 200
    assert post(client, message(), auth, **{"Idempotency-Key": "k1"}).status_code == 202
    assert len(key_lookups) == 3


@pytest.mark.parametrize("body", [message(), {"messages": [message(), message(cc=[{"email": "c@example.org"}])]}],
                         ids=["single", "batch"])
def test_a_recalled_key_revoked_since_stores_nothing(client, auth, conn, body):
    assert post(client, message(), auth).status_code == 202
    apps.revoke_app(conn, "billing")  # (which cancels the queued job, with an audit event)
    before = stored(conn)
    assert_error(post(client, body, auth), 401, "unauthorized")
    assert stored(conn) == before
    assert count(conn, "procrastinate_jobs") == 1


def test_a_recalled_key_rotated_since_is_401_and_the_new_key_works(client, auth, conn, key_lookups):
    assert post(client, message(), auth).status_code == 202
    _, new_key = apps.rotate_key(conn, "billing")
    assert_error(post(client, message(), auth), 401, "unauthorized")  # recalled, refused by the insert
    lookups = len(key_lookups)
    assert_error(post(client, message(), auth), 401, "unauthorized")  # forgotten: looked up, and refused
    assert len(key_lookups) == lookups + 1
    assert post(client, message(), {"Authorization": f"Bearer {new_key}"}).status_code == 202
    assert count(conn, "jobs") == 2


@pytest.mark.parametrize("body", [b"{not json", {"subject": "no recipients"}], ids=["malformed", "invalid"])
def test_a_recalled_key_revoked_since_is_401_whatever_the_body(client, auth, conn, body):
    assert post(client, message(), auth).status_code == 202
    apps.revoke_app(conn, "billing")
    assert_error(post(client, body, auth), 401, "unauthorized")


def test_a_recalled_key_revoked_since_is_401_even_with_a_body_above_the_limit(settings, api_key, conn):
    auth = {"Authorization": f"Bearer {api_key}"}
    with app_with(settings, max_body_bytes=2000) as application:
        client = application.test_client()
        assert post(client, message(), auth).status_code == 202
        apps.revoke_app(conn, "billing")
        assert_error(post(client, json.dumps(message(text="x" * 5000)), auth), 401, "unauthorized")


def test_a_key_refused_anywhere_is_recalled_no_more(client, auth, conn, key_lookups):
    assert post(client, message(), auth).status_code == 202
    apps.rotate_key(conn, "billing")
    assert_error(post(client, {"subject": "no recipients"}, auth), 401, "unauthorized")  # refused by the lookup
    lookups = len(key_lookups)
    assert_error(post(client, message(), auth), 401, "unauthorized")
    assert len(key_lookups) == lookups + 1  # looked up again, not recalled


def test_a_wrong_secret_for_a_remembered_key_id_does_not_make_it_forgotten(client, auth, api_key, key_lookups):
    assert post(client, message(), auth).status_code == 202
    forged = {"Authorization": f"Bearer {'_'.join(api_key.split('_')[:2])}_forged-secret"}
    assert_error(post(client, message(), forged), 401, "unauthorized")
    lookups = len(key_lookups)
    assert post(client, message(), auth).status_code == 202
    assert len(key_lookups) == lookups  # still recalled


def test_a_revoked_key_cannot_replay_its_idempotent_answer(client, auth, conn):
    assert post(client, message(), auth, **{"Idempotency-Key": "k1"}).status_code == 202
    apps.revoke_app(conn, "billing")
    assert_error(post(client, message(), auth, **{"Idempotency-Key": "k1"}), 401, "unauthorized")


def test_a_recalled_key_revoked_since_is_401_not_429_when_over_its_limit(settings, conn):
    key = make_key(conn, "limited")
    app = mailer.create_app(dataclasses.replace(settings, rate_limit_per_s=0.01, rate_limit_burst=1))
    try:
        client = app.test_client()
        assert post(client, message(), {"Authorization": f"Bearer {key}"}).status_code == 202
        assert_error(post(client, message(), {"Authorization": f"Bearer {key}"}), 429, "rate_limited")
        apps.revoke_app(conn, "limited")
        assert_error(post(client, message(), {"Authorization": f"Bearer {key}"}), 401, "unauthorized")
    finally:
        app.extensions["mailer.pool"].close()


def test_the_bearer_scheme_is_case_insensitive(client, api_key):
    assert post(client, message(), {"Authorization": f"bearer {api_key}"}).status_code == 202


def test_status_needs_a_key_too(client, auth):
    job_id = post(client, message(), auth).json["id"]
    assert_error(client.get(f"/status/{job_id}"), 401, "unauthorized")
    assert_error(client.get(f"/status/{job_id}", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")


# --- durability: the job and its wake-up commit together ------------------------------------------------


def wakeups(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT task_name, queue_name, status::text, priority, scheduled_at FROM procrastinate_jobs ORDER BY id"
    ).fetchall()


def test_a_202_leaves_the_job_and_one_wakeup(client, auth, conn):
    response = post(client, message(), auth)
    assert response.status_code == 202
    assert count(conn, "jobs") == 1
    assert wakeups(conn) == [(SEND_TASK, "send", "todo", 10, None)]
    events = conn.execute("SELECT type FROM job_events WHERE job_id = %s", (response.json["id"],)).fetchall()
    assert events == [("queued",)]


@pytest.mark.parametrize("n", [2, 50, 51, 120])
def test_n_due_messages_wake_ceil_n_over_50_senders(client, auth, conn, n):
    response = post(client, {"messages": [message() for _ in range(n)]}, auth)
    assert response.status_code == 202
    assert count(conn, "jobs") == n
    rows = wakeups(conn)
    assert len(rows) == math.ceil(n / 50)
    assert {row[0] for row in rows} == {SEND_TASK}


def test_a_scheduled_job_wakes_its_sender_at_send_at(client, auth, conn):
    send_at = in_hours(3, offset_hours=9)
    response = post(client, message(send_at=send_at.isoformat()), auth)
    assert response.json["status"] == "scheduled"
    ((task, _, status, _, scheduled_at),) = wakeups(conn)
    assert (task, status) == (SEND_TASK, "todo")
    assert scheduled_at == send_at


def test_transactional_wakeups_outrank_bulk(client, auth, conn):
    assert post(client, message(priority="bulk"), auth).status_code == 202
    assert post(client, message(), auth).status_code == 202
    (bulk, transactional) = wakeups(conn)  # in the order the requests came
    assert bulk[0] == transactional[0] == SEND_TASK
    assert transactional[3] > bulk[3]


def test_a_mixed_batch_wakes_each_lane_separately(client, auth, conn):
    batch = [message(priority="bulk") for _ in range(60)] + [message() for _ in range(60)]
    assert post(client, {"messages": batch}, auth).status_code == 202
    lanes = conn.execute(
        "SELECT priority, count(*) FROM procrastinate_jobs GROUP BY priority ORDER BY priority"
    ).fetchall()
    assert len(lanes) == 2
    (bulk, bulk_count), (transactional, transactional_count) = lanes
    assert transactional > bulk
    assert (bulk_count, transactional_count) == (2, 2)


# --- Idempotency-Key --------------------------------------------------------------------------------


def test_a_repeat_with_the_same_key_and_body_replays_the_answer(client, auth, conn):
    first = post(client, message(), auth, **{"Idempotency-Key": "order-1001"})
    again = post(client, message(), auth, **{"Idempotency-Key": "order-1001"})
    assert first.status_code == again.status_code == 202
    assert again.data == first.data
    assert count(conn, "jobs") == 1
    assert count(conn, "procrastinate_jobs") == 1


def test_a_replay_ignores_key_order_and_whitespace(client, auth, conn):
    first = post(client, message(), auth, **{"Idempotency-Key": "k"})
    reordered = json.dumps(dict(reversed(list(message().items()))), indent=4)
    again = post(client, reordered, auth, **{"Idempotency-Key": "k"})
    assert (again.status_code, again.get_json()) == (202, first.get_json())
    assert count(conn, "jobs") == 1


def test_a_batch_replays_its_whole_answer(client, auth, conn):
    batch = {"messages": [message(subject="a"), message(subject="b")]}
    first = post(client, batch, auth, **{"Idempotency-Key": "batch-7"})
    again = post(client, batch, auth, **{"Idempotency-Key": "batch-7"})
    assert again.status_code == 202
    assert again.get_json() == first.get_json()
    assert count(conn, "jobs") == 2


def test_the_same_key_with_another_body_is_422(client, auth, conn):
    assert post(client, message(), auth, **{"Idempotency-Key": "k1"}).status_code == 202
    before = stored(conn)
    details = assert_error(
        post(client, message(subject="Another"), auth, **{"Idempotency-Key": "k1"}), 422, "validation_error"
    )
    assert "Idempotency-Key" in details
    assert stored(conn) == before


def test_a_refused_request_does_not_use_up_its_key(client, auth, conn):
    assert_error(post(client, message(to=[]), auth, **{"Idempotency-Key": "k2"}), 422, "validation_error")
    response = post(client, message(), auth, **{"Idempotency-Key": "k2"})
    assert response.status_code == 202
    assert count(conn, "jobs") == 1


def test_keys_belong_to_one_app(client, auth, conn):
    other = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    mine = post(client, message(), auth, **{"Idempotency-Key": "shared"})
    theirs = post(client, message(), other, **{"Idempotency-Key": "shared"})
    assert mine.status_code == theirs.status_code == 202
    assert mine.json["id"] != theirs.json["id"]
    assert count(conn, "jobs") == 2
    # ...and a different body under the same key in the other app is not a conflict either.
    assert post(client, message(subject="x"), other, **{"Idempotency-Key": "mine-only"}).status_code == 202


@pytest.mark.parametrize("key", ["k" * 256, "   ", ""], ids=["256 characters", "blank", "empty"])
def test_a_bad_key_is_422(client, auth, conn, key):
    details = assert_error(post(client, message(), auth, **{"Idempotency-Key": key}), 422, "validation_error")
    assert "Idempotency-Key" in details
    assert stored(conn) == NOTHING


def test_a_key_of_255_characters_is_fine(client, auth, conn):
    first = post(client, message(), auth, **{"Idempotency-Key": "k" * 255})
    again = post(client, message(), auth, **{"Idempotency-Key": "k" * 255})
    assert first.status_code == again.status_code == 202
    assert again.json == first.json
    assert count(conn, "jobs") == 1


def test_a_repeat_while_the_first_is_in_flight_is_409(client, auth, conn, database_url):
    app_id = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0]
    with psycopg.connect(database_url) as holder:  # not autocommit: the lock lives until it commits
        holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s::text || ':' || %s, 0))", (app_id, "in-flight")
        )
        response = post(client, message(), auth, **{"Idempotency-Key": "in-flight"})
        assert_error(response, 409, "conflict")
        assert stored(conn) == NOTHING
        # Another key is not held up.
        assert post(client, message(), auth, **{"Idempotency-Key": "other"}).status_code == 202
    assert post(client, message(), auth, **{"Idempotency-Key": "in-flight"}).status_code == 202
    assert count(conn, "jobs") == 2


# --- isolation and routing -------------------------------------------------------------------------


def test_another_apps_job_is_404(client, auth, conn):
    other = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    job_id = post(client, message(), auth).json["id"]
    assert client.get(f"/status/{job_id}", headers=auth).status_code == 200
    assert_error(client.get(f"/status/{job_id}", headers=other), 404, "not_found")


@pytest.mark.parametrize(
    "job_id", ["not-a-uuid", "123", str(uuid.uuid4()), "%00"], ids=["word", "number", "unknown uuid", "nul"]
)
def test_an_unknown_or_malformed_id_is_404(client, auth, job_id):
    assert_error(client.get(f"/status/{job_id}", headers=auth), 404, "not_found")


@pytest.mark.parametrize("path", ["/nope", "/queue/extra/path", "/status"])
def test_an_unknown_route_is_404(client, auth, path):
    assert_error(client.get(path, headers=auth), 404, "not_found")
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/queue"), ("PUT", "/queue"), ("POST", f"/status/{uuid.UUID(int=1)}"), ("GET", "/events")],
)
def test_a_wrong_method_is_405(client, auth, method, path):
    response = client.open(path, method=method, headers=auth)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]
    assert method not in response.headers["Allow"]


def test_an_unreachable_database_is_503(settings):
    dead = f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/mailer"
    with app_with(settings, database_url=dead, db_timeout_s=0.3) as application:
        response = post(application.test_client(), message(), {"Authorization": "Bearer mk_abc_def"})
        assert_error(response, 503, "database_unavailable")


def test_without_a_key_accepting_is_one_statement_with_a_key_one_transaction(database_url: str, tmp_path) -> None:
    # The single statement is atomic by itself (jobs, recipients, audit rows and wake-ups): BEGIN and COMMIT
    # would only add two round trips. With an Idempotency-Key the stored answer must commit with the jobs.
    message = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Hi",
               "text": "hello"}
    with psycopg.connect(database_url, autocommit=True) as conn:
        app, _ = apps.create_app(conn, "traced")
        for key, opens_a_transaction in ((None, False), ("order-1", True)):
            trace = tmp_path / f"{key}.trace"
            with trace.open("wb") as out:
                conn.pgconn.trace(out.fileno())
                queueing.accept(conn, app_id=app.id, test=False, jobs=[queueing.NewJob(message=dict(message))],
                                batch=False, batch_size=50, idempotency_key=key, request_hash="h" if key else "")
                conn.pgconn.untrace()
            assert (b'"BEGIN"' in trace.read_bytes()) is opens_a_transaction
        assert conn.execute("SELECT count(*) FROM jobs WHERE app_id = %s", (app.id,)).fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (1,)


def test_messages_the_fast_path_leaves_to_marshmallow_are_loaded_by_one_schema_instance(client, auth, monkeypatch):
    # Building a MessageSchema (its fields copied, its nested schemas built at its first load) cost three times
    # what loading a message with one does (api/queue.py).
    from mailer.api import schemas

    send_at = in_hours(1).isoformat()
    bodies = [message(send_at=send_at), {"messages": [message(send_at=send_at)] * 2}, message(send_at="tomorrow")]
    first = [post(client, body, auth).status_code for body in bodies]  # nested schemas are built at a first load
    built: list[str] = []
    for schema in (schemas.MessageSchema, schemas.BatchSchema, schemas.AddressSchema):
        original = schema.__init__

        def counting(self, *args, _original=original, **kwargs):
            built.append(type(self).__name__)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(schema, "__init__", counting)
    answers = [post(client, body, auth) for body in bodies * 2]

    assert first == [202, 202, 422]
    assert [answer.status_code for answer in answers] == [202, 202, 422] * 2
    assert answers[-1].get_json()["error"]["details"] == {"send_at": ["Not a valid datetime."]}
    assert built == []
