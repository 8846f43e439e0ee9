"""Suppression lists: the API, the Mailjet events that fill the list, and what sending does about it."""

from __future__ import annotations

import base64
import datetime as dt
import json

import psycopg
import pytest

from mailer.mailjet import simulator as sim
from mailer.services import recovery
from tests.integration.conftest import make_key
from tests.integration.sending_support import make_due, run_sender, script, sends
from tests.integration.test_events_api import assert_error, event, post_events

T0 = 1_755_500_000


def message(*to: str, cc: tuple[str, ...] = (), bcc: tuple[str, ...] = ()) -> dict:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": a} for a in to],
            "cc": [{"email": a} for a in cc], "bcc": [{"email": a} for a in bcc], "subject": "Invoice", "text": "hi"}


def queue(client, auth, body: dict) -> str:
    response = client.post("/queue", json=body, headers=auth)
    assert response.status_code == 202, response.data
    return response.json["id"]


def suppress(client, auth, email: str, reason: str | None = None):
    body = {"email": email} if reason is None else {"email": email, "reason": reason}
    return client.post("/suppressions", json=body, headers=auth)


def listed(client, auth, **query) -> list[str]:
    response = client.get("/suppressions", query_string=query, headers=auth)
    assert response.status_code == 200, response.data
    return [item["email"] for item in response.json["items"]]


def rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT app_id, email, reason, source FROM suppressions ORDER BY app_id, email").fetchall()


def status(client, auth, job_id: str) -> dict:
    response = client.get(f"/status/{job_id}", headers=auth)
    assert response.status_code == 200
    return response.json


@pytest.fixture
def other_auth(conn: psycopg.Connection) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(conn, 'shop')}"}


# --- the API ---------------------------------------------------------------------------------------------


def test_post_adds_the_address_lower_cased_and_get_lists_it(client, auth) -> None:
    before = dt.datetime.now(dt.UTC)
    response = suppress(client, auth, "Ann@Example.ORG", "asked us by phone")

    assert response.status_code == 201
    assert list(response.json) == ["email", "reason", "source", "scope", "created_at"]
    assert response.json["email"] == "ann@example.org"
    assert (response.json["reason"], response.json["source"]) == ("asked us by phone", "api")
    assert response.json["created_at"].endswith("Z")
    created = dt.datetime.fromisoformat(response.json["created_at"])
    assert before - dt.timedelta(seconds=5) <= created <= dt.datetime.now(dt.UTC)
    page = client.get("/suppressions", headers=auth).json
    assert page == {"items": [response.json], "next_cursor": None}


def test_a_reason_is_optional(client, auth) -> None:
    assert suppress(client, auth, "ann@example.org").json["reason"] is None
    assert client.post("/suppressions", json={"email": "bob@example.org", "reason": None}, headers=auth).status_code \
        == 201


def test_posting_an_address_already_listed_is_200_with_the_entry_unchanged(client, auth, conn) -> None:
    first = suppress(client, auth, "ann@example.org", "first reason").json

    again = suppress(client, auth, "ANN@example.org", "another reason")

    assert again.status_code == 200
    assert again.json == first
    assert rows(conn)[0][2:] == ("first reason", "api")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": ""}, "email"),
        ({"email": 5}, "email"),
        ({"email": None}, "email"),
        ({"email": "a" * 250 + "@example.org"}, "email"),
        ({"email": "ann@example.org", "reason": "x" * 201}, "reason"),
        ({"email": "ann@example.org", "reason": "line\nbreak"}, "reason"),
        ({"email": "ann@example.org", "reason": "carriage\rreturn"}, "reason"),
        ({"email": "ann@example.org", "reason": 5}, "reason"),
        ({"email": "ann@example.org", "source": "api"}, "source"),
        ({"email": "ann@example.org", "emial": "typo"}, "emial"),
        ([{"email": "ann@example.org"}], "_schema"),
        ("ann@example.org", "_schema"),
        (None, "_schema"),
    ],
)
def test_a_bad_body_is_422_naming_the_field_and_adds_nothing(client, auth, conn, payload, field) -> None:
    response = client.post("/suppressions", data=json.dumps(payload), content_type="application/json", headers=auth)
    assert_error(response, 422, "validation_error")
    assert field in response.json["error"]["details"]
    assert rows(conn) == []


def test_a_reason_of_200_characters_is_fine(client, auth) -> None:
    assert suppress(client, auth, "ann@example.org", "x" * 200).status_code == 201


@pytest.mark.parametrize("raw", [b"not json", b"", b'{"email": "ann@example.org"'])
def test_a_body_that_is_not_json_is_400(client, auth, conn, raw) -> None:
    response = client.post("/suppressions", data=raw, content_type="application/json", headers=auth)
    assert_error(response, 400, "malformed_request")
    assert rows(conn) == []


def test_a_nul_in_the_body_is_422(client, auth, conn) -> None:
    raw = b'{"email": "ann@example.org", "reason": "a\\u0000b"}'
    assert_error(client.post("/suppressions", data=raw, content_type="application/json", headers=auth), 422,
                 "validation_error")
    assert rows(conn) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/suppressions"), ("post", "/suppressions"), ("delete", "/suppressions/ann@example.org")],
)
def test_every_endpoint_needs_the_api_key(client, conn, method, path) -> None:
    response = getattr(client, method)(path, json={"email": "ann@example.org"})
    assert_error(response, 401, "unauthorized")
    assert rows(conn) == []


def test_delete_matches_the_address_case_insensitively(client, auth, conn) -> None:
    suppress(client, auth, "ann@example.org")

    response = client.delete("/suppressions/ANN@Example.org", headers=auth)

    assert response.status_code == 204
    assert response.data == b""
    assert rows(conn) == []
    assert_error(client.delete("/suppressions/ann@example.org", headers=auth), 404, "not_found")


@pytest.mark.parametrize(
    "path",
    ["ann%2Btag%40example.org", "ann+tag@example.org", "ANN%2BTAG@EXAMPLE.ORG"],
    ids=["all encoded", "raw plus", "encoded plus, upper case"],
)
def test_delete_takes_url_encoded_addresses(client, auth, conn, path) -> None:
    suppress(client, auth, "ann+tag@example.org")
    assert client.delete(f"/suppressions/{path}", headers=auth).status_code == 204
    assert rows(conn) == []


def test_an_address_with_a_slash_can_be_deleted(client, auth, conn) -> None:
    assert suppress(client, auth, "a/b@example.org").status_code == 201
    assert client.delete("/suppressions/a%2Fb@example.org", headers=auth).status_code == 204
    assert rows(conn) == []


@pytest.mark.parametrize(
    "path", ["nobody@example.org", "not-an-address", "a%00b@example.org", "x" * 2000, "%FF%FE@example.org"]
)
def test_deleting_what_is_not_on_the_list_is_404(client, auth, conn, path) -> None:
    suppress(client, auth, "ann@example.org")
    assert_error(client.delete(f"/suppressions/{path}", headers=auth), 404, "not_found")
    assert len(rows(conn)) == 1


def test_delete_without_an_address_is_405(client, auth) -> None:
    assert_error(client.delete("/suppressions", headers=auth), 405, "method_not_allowed")


def test_apps_see_and_change_only_their_own_list(client, auth, other_auth, conn) -> None:
    suppress(client, auth, "ann@example.org", "billing's reason")

    assert listed(client, other_auth) == []
    assert listed(client, other_auth, email="ann@example.org") == []
    assert_error(client.delete("/suppressions/ann@example.org", headers=other_auth), 404, "not_found")
    mine = suppress(client, other_auth, "ann@example.org", "shop's reason")
    assert (mine.status_code, mine.json["reason"]) == (201, "shop's reason")
    assert client.delete("/suppressions/ann@example.org", headers=other_auth).status_code == 204

    assert listed(client, auth) == ["ann@example.org"]
    assert [row[2] for row in rows(conn)] == ["billing's reason"]


# --- listing ---------------------------------------------------------------------------------------------


def add_rows(conn: psycopg.Connection, app_name: str, entries: list[tuple[str, dt.datetime]]) -> None:
    (app_id,) = conn.execute("SELECT id FROM apps WHERE name = %s", (app_name,)).fetchone()
    for email, created_at in entries:
        conn.execute(
            "INSERT INTO suppressions (app_id, email, reason, source, created_at) VALUES (%s, %s, NULL, 'api', %s)",
            (app_id, email, created_at),
        )


def walk(client, auth, limit: int, **query) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        args = {"limit": limit, **query, **({"cursor": cursor} if cursor else {})}
        response = client.get("/suppressions", query_string=args, headers=auth)
        assert response.status_code == 200, response.data
        pages.append([item["email"] for item in response.json["items"]])
        cursor = response.json["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


def test_the_list_is_newest_first_and_a_walk_returns_each_entry_once(client, auth, conn) -> None:
    t = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    # Three entries share one timestamp (one transaction of events): they are ordered by address.
    add_rows(conn, "billing", [("a@example.org", t), ("b@example.org", t + dt.timedelta(microseconds=1)),
                               ("c@example.org", t), ("d@example.org", t - dt.timedelta(days=1)),
                               ("e@example.org", t)])

    expected = ["b@example.org", "e@example.org", "c@example.org", "a@example.org", "d@example.org"]
    assert listed(client, auth) == expected
    for limit in (1, 2, 3, 5):
        pages = walk(client, auth, limit)
        assert [email for page in pages for email in page] == expected
        assert all(len(page) == limit for page in pages[:-1])
    assert walk(client, auth, 5) == [expected]  # an exactly full last page has no next cursor


def test_entries_added_during_a_walk_do_not_disturb_it(client, auth, conn) -> None:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    add_rows(conn, "billing", [(f"r{i}@example.org", t - dt.timedelta(minutes=i)) for i in range(4)])
    first = client.get("/suppressions", query_string={"limit": 2}, headers=auth).json
    suppress(client, auth, "new@example.org")

    rest = walk(client, auth, 2, cursor=first["next_cursor"])

    assert first["items"][0]["email"] == "r0@example.org"
    assert [item["email"] for item in first["items"]] + [e for page in rest for e in page] == [
        f"r{i}@example.org" for i in range(4)
    ]


def test_the_default_page_is_100(client, auth, conn) -> None:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    add_rows(conn, "billing", [(f"r{i:03}@example.org", t) for i in range(101)])
    page = client.get("/suppressions", headers=auth).json
    assert len(page["items"]) == 100
    assert page["next_cursor"] is not None
    assert len(listed(client, auth, limit=1000)) == 101


def test_the_email_filter_is_case_insensitive(client, auth) -> None:
    for address in ("ann@example.org", "bob@example.org"):
        suppress(client, auth, address)
    assert listed(client, auth, email="ANN@example.org") == ["ann@example.org"]
    assert listed(client, auth, email="cy@example.org") == []


def test_a_cursor_of_another_app_reveals_nothing(client, auth, other_auth, conn) -> None:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    add_rows(conn, "billing", [("a@example.org", t), ("b@example.org", t)])
    cursor = client.get("/suppressions", query_string={"limit": 1}, headers=auth).json["next_cursor"]
    assert listed(client, other_auth, cursor=cursor) == []


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"limit": "9" * 30}, "limit"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": _cursor({"a": 1})}, "cursor"),
        ({"cursor": _cursor(["yesterday", "a@example.org"])}, "cursor"),
        ({"cursor": _cursor(["2026-01-01T00:00:00", "a@example.org"])}, "cursor"),  # no offset
        ({"cursor": _cursor(["2026-01-01T00:00:00+00:00", 5])}, "cursor"),
        ({"cursor": _cursor(["2026-01-01T00:00:00+00:00", "a\u0000b"])}, "cursor"),
        ({"cursor": _cursor(["2026-01-01T00:00:00+00:00"])}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "cursor"),
        ({"email": "not-an-address"}, "email"),
        ({"email": ""}, "email"),
        ({"limt": "5"}, "limt"),
    ],
)
def test_a_bad_query_is_422_naming_the_parameter(client, auth, query, field) -> None:
    response = client.get("/suppressions", query_string=query, headers=auth)
    assert_error(response, 422, "validation_error")
    assert field in response.json["error"]["details"]


def test_a_repeated_parameter_is_422(client, auth) -> None:
    response = client.get("/suppressions?limit=1&limit=500", headers=auth)
    assert_error(response, 422, "validation_error")
    assert "limit" in response.json["error"]["details"]


# --- Mailjet's events fill the list ----------------------------------------------------------------------


SUPPRESSING = [
    ({"event": "bounce", "hard_bounce": True, "error": "user unknown"}, "bounce"),
    ({"event": "blocked", "error": "preblocked"}, "blocked"),
    ({"event": "spam", "source": "JMRPP"}, "spam"),
    ({"event": "unsub", "mj_list_id": 1}, "unsub"),
]
NOT_SUPPRESSING = [
    {"event": "bounce", "hard_bounce": False, "error": "greylisted"},
    {"event": "bounce"},
    {"event": "sent"},
    {"event": "open"},
    {"event": "click", "url": "https://example.com"},
]


def mailjet_event(fields: dict, **kwargs) -> dict:
    fields = dict(fields)
    return event(fields.pop("event"), at=kwargs.pop("at", T0), **kwargs, **fields)


@pytest.mark.parametrize(("fields", "name"), SUPPRESSING, ids=[name for _, name in SUPPRESSING])
def test_a_suppressing_event_matched_by_custom_id_adds_the_address(client, auth, other_auth, conn, fields,
                                                                    name) -> None:
    job_id = queue(client, auth, message("Ann@Example.org"))

    response = post_events(client, mailjet_event(fields, custom_id=job_id, email="ann@example.org"))

    assert response.json["matched"] == 1
    (entry,) = client.get("/suppressions", headers=auth).json["items"]
    assert (entry["email"], entry["source"], entry["reason"]) == ("ann@example.org", name, name)
    assert listed(client, other_auth) == []  # only the app that sent the message


@pytest.mark.parametrize("fields", NOT_SUPPRESSING, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_other_events_add_nothing(client, auth, conn, fields) -> None:
    job_id = queue(client, auth, message("ann@example.org"))
    assert post_events(client, mailjet_event(fields, custom_id=job_id)).json["matched"] == 1
    assert rows(conn) == []


@pytest.mark.parametrize(("fields", "name"), SUPPRESSING, ids=[name for _, name in SUPPRESSING])
def test_a_suppressing_event_matched_by_message_id_after_the_send_adds_the_address(
    client, auth, conn, send_settings, fields, name
) -> None:
    job_id = queue(client, auth, message("ok@example.org", "Ann@example.org"))
    assert run_sender(send_settings).sent == 1
    message_id = int(status(client, auth, job_id)["recipients"][1]["message_id"])

    post_events(client, mailjet_event(fields, message_id=message_id, email="ann@example.org"))

    assert listed(client, auth) == ["ann@example.org"]
    assert [row[3] for row in rows(conn)] == [name]


def test_an_event_that_arrives_before_the_send_result_suppresses_once_matched(
    client, auth, conn, send_settings
) -> None:
    job_id = queue(client, auth, message("ann@example.org"))
    # The simulator's first MessageID: the event names the message before the sender has stored it.
    early = event("spam", at=T0, message_id=sim.FIRST_MESSAGE_ID)
    assert post_events(client, early).json == {"received": 1, "new": 1, "matched": 0}
    assert rows(conn) == []

    assert run_sender(send_settings).sent == 1

    assert status(client, auth, job_id)["recipients"][0]["message_id"] == str(sim.FIRST_MESSAGE_ID)
    assert listed(client, auth) == ["ann@example.org"]
    assert [row[3] for row in rows(conn)] == ["spam"]


def test_an_event_matched_by_the_recovery_sweep_suppresses(client, auth, settings, conn) -> None:
    queue(client, auth, message("ann@example.org"))
    message_id = 2**60 + 7
    # The race the sweep repairs: event and send result were stored in parallel and neither matched.
    conn.execute(
        "INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, email, suppresses, payload)"
        " VALUES ('fp-1', 'blocked', 'blocked', now(), %s, 'ann@example.org', true, '{}')",
        (message_id,),
    )
    conn.execute("UPDATE recipients SET message_id = %s, status = 'sent'", (message_id,))

    assert recovery.sweep(conn, settings).late_events == 1

    assert [row[1:] for row in rows(conn)] == [("ann@example.org", "blocked", "blocked")]


def test_an_unmatched_suppressing_event_adds_nothing(client, auth, conn) -> None:
    queue(client, auth, message("ann@example.org"))
    post_events(client, event("spam", at=T0, message_id=sim.FIRST_MESSAGE_ID))
    post_events(client, event("unsub", at=T0, custom_id="not-ours"))
    assert rows(conn) == []


def test_an_address_taken_off_the_list_is_not_put_back_by_later_harmless_events(client, auth, conn) -> None:
    job_id = queue(client, auth, message("ann@example.org"))
    post_events(client, event("unsub", at=T0, custom_id=job_id))
    assert client.delete("/suppressions/ann@example.org", headers=auth).status_code == 204

    post_events(client, event("click", at=T0 + 60, custom_id=job_id))
    post_events(client, event("unsub", at=T0, custom_id=job_id))  # Mailjet retrying the same event

    assert rows(conn) == []


def test_a_listed_address_keeps_its_first_entry(client, auth, conn) -> None:
    suppress(client, auth, "ann@example.org", "asked by phone")
    job_id = queue(client, auth, message("ann@example.org"))
    post_events(client, [event("unsub", at=T0, custom_id=job_id), event("spam", at=T0 + 1, custom_id=job_id)])
    assert [row[2:] for row in rows(conn)] == [("asked by phone", "api")]


# --- sending ---------------------------------------------------------------------------------------------


def audit(story: dict, kind: str) -> list[dict]:
    return [entry for entry in story["events"] if entry["type"] == kind]


def test_a_job_whose_only_recipient_is_suppressed_is_not_sent(client, auth, send_settings, simulator) -> None:
    suppress(client, auth, "ANN@example.org")
    job_id = queue(client, auth, message("ann@EXAMPLE.org"))

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.suppressed, outcome.sent) == (1, 1, 0)
    assert sends(simulator)["calls"] == 0
    story = status(client, auth, job_id)
    assert story["status"] == "suppressed"
    assert [(r["status"], r["message_id"]) for r in story["recipients"]] == [("suppressed", None)]
    assert [entry["detail"] for entry in audit(story, "suppressed")] == [{"recipients": ["ann@EXAMPLE.org"]}]
    assert run_sender(send_settings).claimed == 0  # final: never claimed again


def test_a_suppressed_first_to_recipient_is_left_out_and_the_other_gets_its_message_id(
    client, auth, send_settings, simulator
) -> None:
    suppress(client, auth, "ann@example.org")
    job_id = queue(client, auth, message("ann@example.org", "bob@example.org"))

    outcome = run_sender(send_settings)

    assert (outcome.sent, outcome.suppressed) == (1, 0)
    (sent,) = sends(simulator)["messages"]
    assert [r["email"] for r in sent["recipients"]] == ["bob@example.org"]
    story = status(client, auth, job_id)
    assert story["status"] == "sent"
    ann, bob = story["recipients"]
    assert (ann["email"], ann["status"], ann["message_id"]) == ("ann@example.org", "suppressed", None)
    assert (bob["email"], bob["status"], bob["message_id"]) == ("bob@example.org", "sent",
                                                               sent["recipients"][0]["message_id"])
    assert [e["detail"] for e in audit(story, "recipients_suppressed")] == [{"recipients": ["ann@example.org"]}]
    assert story["events"][-1]["type"] == "sent"


def test_a_suppressed_cc_recipient_is_left_out_and_positions_still_match(
    client, auth, send_settings, simulator
) -> None:
    suppress(client, auth, "cc1@example.org")
    job_id = queue(client, auth, message("to@example.org", cc=("cc1@example.org", "cc2@example.org"),
                                         bcc=("bcc@example.org",)))

    run_sender(send_settings)

    (sent,) = sends(simulator)["messages"]
    ids = {r["email"]: r["message_id"] for r in sent["recipients"]}
    assert set(ids) == {"to@example.org", "cc2@example.org", "bcc@example.org"}
    story = status(client, auth, job_id)
    assert story["status"] == "sent"
    assert [(r["kind"], r["email"], r["status"], r["message_id"]) for r in story["recipients"]] == [
        ("to", "to@example.org", "sent", ids["to@example.org"]),
        ("cc", "cc1@example.org", "suppressed", None),
        ("cc", "cc2@example.org", "sent", ids["cc2@example.org"]),
        ("bcc", "bcc@example.org", "sent", ids["bcc@example.org"]),
    ]


def test_when_every_to_recipient_is_suppressed_the_cc_recipients_move_up_to_to(
    client, auth, send_settings, simulator
) -> None:
    suppress(client, auth, "ann@example.org")
    job_id = queue(client, auth, message("ann@example.org", cc=("cc1@example.org", "cc2@example.org")))

    run_sender(send_settings)

    (sent,) = sends(simulator)["messages"]
    assert [r["email"] for r in sent["recipients"]] == ["cc1@example.org", "cc2@example.org"]
    story = status(client, auth, job_id)
    assert story["status"] == "sent"
    assert [(r["kind"], r["status"], r["message_id"]) for r in story["recipients"]] == [
        ("to", "suppressed", None),
        ("cc", "sent", sent["recipients"][0]["message_id"]),
        ("cc", "sent", sent["recipients"][1]["message_id"]),
    ]


def test_a_lone_bcc_recipient_moves_up_to_to(client, auth, send_settings, simulator) -> None:
    suppress(client, auth, "ann@example.org")
    job_id = queue(client, auth, message("ann@example.org", bcc=("audit@example.org",)))

    run_sender(send_settings)

    (sent,) = sends(simulator)["messages"]
    story = status(client, auth, job_id)
    assert story["status"] == "sent"
    assert [(r["kind"], r["status"], r["message_id"]) for r in story["recipients"]] == [
        ("to", "suppressed", None), ("bcc", "sent", sent["recipients"][0]["message_id"])]


def test_several_bcc_recipients_alone_are_not_revealed_to_each_other(client, auth, send_settings, simulator) -> None:
    suppress(client, auth, "ann@example.org")
    job_id = queue(client, auth, message("ann@example.org", bcc=("b1@example.org", "b2@example.org")))

    outcome = run_sender(send_settings)

    assert outcome.failed == 1
    assert sends(simulator)["calls"] == 0
    story = status(client, auth, job_id)
    assert story["status"] == "failed"
    assert "Bcc" in story["last_error"]
    assert [r["status"] for r in story["recipients"]] == ["suppressed", "failed", "failed"]


def test_a_batch_mixes_suppressed_and_sent_jobs_in_one_call(client, auth, send_settings, simulator) -> None:
    suppress(client, auth, "ann@example.org")
    body = {"messages": [message("ann@example.org"), message("bob@example.org"), message("ann@example.org")]}
    ids = [job["id"] for job in client.post("/queue", json=body, headers=auth).json["jobs"]]

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent, outcome.suppressed) == (3, 1, 2)
    assert sends(simulator)["calls"] == 1
    assert sends(simulator)["by_custom_id"] == {ids[1]: 1}
    assert [status(client, auth, job_id)["status"] for job_id in ids] == ["suppressed", "sent", "suppressed"]


def test_another_apps_list_does_not_stop_a_send(client, auth, other_auth, send_settings, simulator) -> None:
    suppress(client, other_auth, "ann@example.org")
    job_id = queue(client, auth, message("ann@example.org"))
    assert run_sender(send_settings).sent == 1
    assert status(client, auth, job_id)["recipients"][0]["status"] == "sent"


def test_an_address_taken_off_the_list_is_sent_to_again(client, auth, send_settings, simulator) -> None:
    suppress(client, auth, "ann@example.org")
    first = queue(client, auth, message("ann@example.org"))
    run_sender(send_settings)
    assert status(client, auth, first)["status"] == "suppressed"

    assert client.delete("/suppressions/ann@example.org", headers=auth).status_code == 204
    second = queue(client, auth, message("ann@example.org"))

    assert run_sender(send_settings).sent == 1
    assert status(client, auth, second)["recipients"][0]["status"] == "sent"
    assert sends(simulator)["by_custom_id"] == {second: 1}


def test_an_event_suppresses_the_next_send(client, auth, send_settings, simulator) -> None:
    first = queue(client, auth, message("ann@example.org"))
    run_sender(send_settings)
    post_events(client, event("bounce", at=T0, custom_id=first, hard_bounce=True))
    second = queue(client, auth, message("ann@example.org"))

    assert run_sender(send_settings).suppressed == 1

    assert sends(simulator)["by_custom_id"] == {first: 1}
    assert status(client, auth, second)["status"] == "suppressed"


def test_a_requeued_job_is_screened_again_at_its_next_attempt(client, auth, send_settings, simulator, conn) -> None:
    suppress(client, auth, "ann@example.org")
    job_id = queue(client, auth, message("ann@example.org", "bob@example.org"))
    script(simulator, "429")

    assert run_sender(send_settings).retried == 1
    assert [r["status"] for r in status(client, auth, job_id)["recipients"]] == ["pending", "pending"]
    assert client.delete("/suppressions/ann@example.org", headers=auth).status_code == 204
    make_due(conn)

    assert run_sender(send_settings).sent == 1
    assert [r["status"] for r in status(client, auth, job_id)["recipients"]] == ["sent", "sent"]
    assert audit(status(client, auth, job_id), "recipients_suppressed") == []


def test_retrying_a_failed_job_screens_its_suppressed_recipients_again(
    client, auth, send_settings, simulator
) -> None:
    suppress(client, auth, "ann@example.org")
    job_id = queue(client, auth, message("ann@example.org", "bob@nowhere.invalid"))
    run_sender(send_settings)
    story = status(client, auth, job_id)
    assert story["status"] == "failed"  # Mailjet refused the other address
    assert [r["status"] for r in story["recipients"]] == ["suppressed", "failed"]

    client.delete("/suppressions/ann@example.org", headers=auth)
    assert client.post(f"/queue/{job_id}/retry", headers=auth).status_code == 202

    assert [r["status"] for r in status(client, auth, job_id)["recipients"]] == ["pending", "pending"]
    assert run_sender(send_settings).failed == 1  # refused as a whole again, both addresses in it this time
    assert sends(simulator)["by_custom_id"] == {}
    assert [r["status"] for r in status(client, auth, job_id)["recipients"]] == ["failed", "failed"]
