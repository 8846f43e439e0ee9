"""One-click unsubscribe (RFC 8058): the headers bulk mail carries, the token, and what the link does."""

from __future__ import annotations

import dataclasses
import re
import uuid

import psycopg
import pytest

from mailer.config import Settings
from mailer.services import unsubscribe
from tests.integration.conftest import make_key
from tests.integration.sending_support import run_sender, sends
from tests.integration.webhooks_support import deliveries, messages, register

PUBLIC = "https://mail.example.com"
HOOK = "https://93.184.215.14/hooks/unsub"  # a public IP literal: never called here
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
LINK = re.compile(r"<https://mail\.example\.com(/unsubscribe/[A-Za-z0-9_-]+)>")


@pytest.fixture
def app_id(conn: psycopg.Connection, auth: dict[str, str]) -> int:
    """The id of the app `auth` authenticates."""
    row = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def unsub_settings(send_settings: Settings) -> Settings:
    return dataclasses.replace(send_settings, public_url=PUBLIC)


def queue(client, auth, *to: str, priority: str = "bulk", headers: dict | None = None) -> str:
    body = {"from": {"email": "news@example.com"}, "to": [{"email": a} for a in to], "subject": "News",
            "text": "hi", "priority": priority}
    if headers:
        body["headers"] = headers
    response = client.post("/queue", json=body, headers=auth)
    assert response.status_code == 202, response.data
    return str(response.json["id"])


def sent_headers(simulator: str) -> dict[str, dict]:
    return {m["custom_id"]: m["headers"] for m in sends(simulator)["messages"]}


def link_of(headers: dict) -> str:
    found = LINK.search(headers["List-Unsubscribe"])
    assert found, headers
    return found.group(1)


def job_status(client, auth, job_id: str) -> str:
    return str(client.get(f"/status/{job_id}", headers=auth).json["status"])


def test_bulk_mail_carries_the_headers_and_transactional_mail_does_not(
    client, auth, simulator, unsub_settings
) -> None:
    bulk = queue(client, auth, "Ann@example.org", "bob@example.org")
    transactional = queue(client, auth, "ann@example.org", priority="transactional")
    assert run_sender(unsub_settings).sent == 2

    headers = sent_headers(simulator)
    assert headers[transactional] == {}
    assert headers[bulk]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = link_of(headers[bulk])
    assert "ann" not in path.lower() and "example" not in path  # no address in clear
    assert len(path) < 400


def test_no_public_url_no_headers(client, auth, simulator, send_settings) -> None:
    job = queue(client, auth, "ann@example.org")
    assert run_sender(send_settings).sent == 1
    assert sent_headers(simulator)[job] == {}


def test_the_link_round_trip_suppresses_bulk_mail_only(client, auth, conn, simulator, unsub_settings) -> None:
    first = queue(client, auth, "Ann@example.org")
    run_sender(unsub_settings)
    path = link_of(next(iter(sent_headers(simulator).values())))

    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "ann@example.org" in page.text and '<form method="post"' in page.text and "<script" not in page.text
    assert "action=" not in page.text  # posts back to its own URL, path prefix and all
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert client.get("/suppressions", headers=auth).json["items"] == []  # a GET changes nothing

    answer = client.post(path, data=ONE_CLICK)
    assert answer.status_code == 200, answer.data
    assert answer.json == {"email": "ann@example.org", "scope": "bulk", "unsubscribed": True}
    [entry] = client.get("/suppressions", headers=auth).json["items"]
    assert (entry["email"], entry["scope"], entry["source"]) == ("ann@example.org", "bulk", "unsubscribe")
    assert client.get(f"/status/{first}", headers=auth).json["recipients"][0]["status"] == "unsubscribed"

    bulk = queue(client, auth, "ann@example.org")
    transactional = queue(client, auth, "ann@example.org", priority="transactional")
    run_sender(unsub_settings)
    assert job_status(client, auth, bulk) == "suppressed"
    assert job_status(client, auth, transactional) == "sent"


def test_an_empty_body_also_unsubscribes_and_a_repeat_changes_nothing(client, auth, conn, app_id) -> None:
    token = unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=uuid.uuid4(), email="a@b.org")
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200
    assert conn.execute("SELECT email, scope FROM suppressions").fetchall() == [("a@b.org", "bulk")]


def test_a_browser_gets_a_page_after_pressing_the_button(client, conn, app_id) -> None:
    token = unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=uuid.uuid4(), email="a@b.org")
    answer = client.post(f"/unsubscribe/{token}", data=ONE_CLICK, headers={"Accept": "text/html"})
    assert answer.status_code == 200 and answer.mimetype == "text/html" and "a@b.org" in answer.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_forged_or_altered_token_is_404(client, conn, app_id, method) -> None:
    token = unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=uuid.uuid4(), email="a@b.org")
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    forged = unsubscribe.make_token(
        unsubscribe.Fernet(unsubscribe.Fernet.generate_key()), app_id=app_id, job_id=uuid.uuid4(), email="a@b.org"
    )
    for bad in (flipped, forged, token[:-3], "x", "A" * 5000, "%E2%82%AC"):
        answer = client.open(f"/unsubscribe/{bad}", method=method, data=ONE_CLICK)
        assert answer.status_code == 404, bad
        assert answer.json["error"]["code"] == "not_found"
    assert conn.execute("SELECT count(*) FROM suppressions").fetchone() == (0,)


def test_an_unsubscribe_fires_email_unsubscribed_once(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["unsubscribed"])
    register(client, auth, HOOK + "/delivered-only", ["delivered"])
    job_id = uuid.uuid4()
    token = unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=job_id, email="Ann@Example.org")
    for _ in range(3):
        assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200

    [(_, kind, body)] = messages(conn)
    assert kind == "email.unsubscribed"
    assert body["data"]["recipient"] == "ann@example.org" and body["data"]["job_id"] == str(job_id)
    assert body["data"]["status"] == "unsubscribed"
    assert deliveries(conn) == [(HOOK, "email.unsubscribed", "pending")]


def test_the_app_s_own_list_unsubscribe_follows_ours(client, auth, simulator, unsub_settings) -> None:
    theirs = "<mailto:leave@example.com>, <https://example.com/leave?u=1>"
    job = queue(client, auth, "ann@example.org",
                headers={"list-unsubscribe": theirs, "List-Unsubscribe-Post": "nonsense", "X-Tag": "1"})
    run_sender(unsub_settings)
    headers = sent_headers(simulator)[job]
    assert headers["List-Unsubscribe"].startswith("<https://mail.example.com/unsubscribe/")
    assert headers["List-Unsubscribe"].endswith(", " + theirs)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["X-Tag"] == "1"
    assert "list-unsubscribe" not in headers


def test_a_token_of_one_app_suppresses_for_that_app_only(client, auth, conn, app_id) -> None:
    other = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    token = unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=uuid.uuid4(), email="a@b.org")
    client.post(f"/unsubscribe/{token}")
    assert [i["email"] for i in client.get("/suppressions", headers=auth).json["items"]] == ["a@b.org"]
    assert client.get("/suppressions", headers=other).json["items"] == []


def test_suppression_scopes_from_the_api(client, auth, conn) -> None:
    added = client.post("/suppressions", json={"email": "a@b.org", "scope": "bulk"}, headers=auth)
    assert (added.status_code, added.json["scope"]) == (201, "bulk")
    assert client.post("/suppressions", json={"email": "a@b.org", "scope": "bulk"}, headers=auth).status_code == 200
    widened = client.post("/suppressions", json={"email": "a@b.org"}, headers=auth)
    assert (widened.status_code, widened.json["scope"]) == (200, "all")
    assert client.post("/suppressions", json={"email": "c@b.org"}, headers=auth).json["scope"] == "all"
    bad = client.post("/suppressions", json={"email": "d@b.org", "scope": "marketing"}, headers=auth)
    assert bad.status_code == 422 and "scope" in bad.json["error"]["details"]


def test_a_bulk_suppression_becomes_all_on_a_hard_bounce(client, auth, conn, app_id, simulator, send_settings) -> None:
    from tests.integration.test_events_api import event, post_events

    client.post("/suppressions", json={"email": "ann@example.org", "scope": "bulk"}, headers=auth)
    job = queue(client, auth, "ann@example.org", priority="transactional")
    run_sender(send_settings)
    message_id = int(client.get(f"/status/{job}", headers=auth).json["recipients"][0]["message_id"])
    post_events(client, event("bounce", at=1_755_500_000, message_id=message_id, hard_bounce=True))
    assert conn.execute("SELECT scope FROM suppressions").fetchall() == [("all",)]


def test_unsubscribes_are_rate_limited_per_address_with_retry_after(conn, settings, app_id) -> None:
    from tests.integration.conftest import app_with

    token = unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=uuid.uuid4(), email="a@b.org")
    with app_with(settings, unsubscribes_per_address_per_min=2) as application:
        client = application.test_client()
        assert [client.post(f"/unsubscribe/{token}").status_code for _ in range(2)] == [200, 200]
        refused = client.post(f"/unsubscribe/{token}")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json["error"]["code"] == "rate_limited"
        other = client.post(f"/unsubscribe/{token}", environ_base={"REMOTE_ADDR": "192.0.2.9"})
        assert other.status_code == 200  # another address has its own bucket


def test_an_address_already_suppressed_for_all_mail_stays_so(client, auth, conn, app_id) -> None:
    register(client, auth, HOOK, ["*"])
    client.post("/suppressions", json={"email": "a@b.org"}, headers=auth)
    token = unsubscribe.make_token(unsubscribe.fernet(conn), app_id=app_id, job_id=uuid.uuid4(), email="a@b.org")
    assert client.post(f"/unsubscribe/{token}").json == {"email": "a@b.org", "scope": "all", "unsubscribed": True}
    assert conn.execute("SELECT scope, source FROM suppressions").fetchall() == [("all", "api")]
    assert messages(conn) == []  # nothing new happened: no email.unsubscribed
