"""Hostile input gets a 4xx in the error shape, never a 500: deep nesting, crafted cursors, absurd dates."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import pytest

from tests.integration.conftest import make_key
from tests.integration.test_events_api import MAILJET, app_with, assert_error, count_events, post_events

MESSAGE = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Hi",
           "text": "hello"}


def nested(depth: int) -> str:
    """JSON text of objects nested `depth` levels deep ({"a": {"a": ... 1}})."""
    return '{"a":' * depth + "1" + "}" * depth


def with_value(template: dict, path: tuple[str, ...], depth: int) -> str:
    """`template` as JSON text, with the value at `path` replaced by `depth` levels of nesting."""
    marker = "__NESTED__"
    data = json.loads(json.dumps(template))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(data).replace(json.dumps(marker), nested(depth))


def post(client, path: str, text: str, headers: dict):
    return client.post(path, data=text, headers=headers, content_type="application/json")


SCHEDULE = {"message": MESSAGE, "start_at": "2099-01-01T09:00:00", "frequency": "DAILY", "timezone": "UTC"}
# (path, body, where the nesting goes, levels the body already has above it)
BODIES = [
    ("/queue", MESSAGE | {"metadata": {"x": 0}}, ("metadata", "x"), 2),
    ("/queue", MESSAGE | {"template_id": 5, "variables": {"x": 0}}, ("variables", "x"), 2),
    ("/queue", {"messages": [MESSAGE | {"metadata": {"x": 0}}]}, ("messages", 0, "metadata", "x"), 4),
    ("/queue", {"messages": [MESSAGE, MESSAGE | {"variables": {"x": 0}, "template_id": 1}]},
     ("messages", 1, "variables", "x"), 4),
    ("/schedules", SCHEDULE | {"message": MESSAGE | {"metadata": {"x": 0}}}, ("message", "metadata", "x"), 3),
    ("/schedules", SCHEDULE | {"message": MESSAGE | {"variables": {"x": 0}, "template_id": 1}},
     ("message", "variables", "x"), 3),
]
BODY_IDS = ["queue metadata", "queue variables", "batch metadata", "batch variables", "schedule metadata",
            "schedule variables"]


@pytest.mark.parametrize(("path", "template", "where", "above"), BODIES, ids=BODY_IDS)
@pytest.mark.parametrize("depth", [40, 300, 970, 5000])
def test_deep_nesting_is_400_naming_the_limit(client, auth, conn, path, template, where, above, depth):
    response = post(client, path, with_value(template, where, depth), auth)
    assert_error(response, 400, "malformed_request")
    assert "32 levels" in response.json["error"]["message"]
    assert "MAILER_MAX_JSON_DEPTH" in response.json["error"]["message"]
    assert conn.execute("SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM schedules)").fetchone() == (0,)


@pytest.mark.parametrize(("path", "template", "where", "above"), BODIES, ids=BODY_IDS)
def test_the_depth_limit_is_exact_and_configurable(settings, conn, path, template, where, above):
    auth = {"Authorization": f"Bearer {make_key(conn, 'deep')}"}
    with app_with(settings, max_json_depth=10) as application:
        client = application.test_client()
        # `above` levels hold the value; nested(n) adds n objects around the innermost 1.
        at_limit = post(client, path, with_value(template, where, 10 - above), auth)
        assert at_limit.status_code in (201, 202), at_limit.json
        beyond = post(client, path, with_value(template, where, 11 - above), auth)
        assert_error(beyond, 400, "malformed_request")
        assert "10 levels" in beyond.json["error"]["message"]


@pytest.mark.parametrize("depth", [33, 970, 100_000])
def test_deep_mailjet_events_are_400_not_500(client, conn, depth):
    response = post_events(client, with_value({"event": "open", "x": 0}, ("x",), depth))
    assert_error(response, 400, "malformed_request")
    assert "32 levels" in response.json["error"]["message"]
    assert count_events(conn) == 0


def test_a_realistic_deep_event_is_kept(client, conn):
    # The array, the event and 29 levels inside it: 31, under the default limit of 32.
    response = post_events(client, "[" + with_value({"event": "open", "x": 0}, ("x",), 29) + "]")
    assert response.status_code == 200, response.json
    assert count_events(conn) == 1


# --- /events: anything Mailjet could send -------------------------------------------------------------------

ODD_EVENTS = [
    b"[]",
    b"{}",
    b"[{}]",
    b'[{"event": null, "time": null, "MessageID": null, "email": null, "CustomID": null}]',
    b'[{"event": 1, "time": true, "MessageID": false, "email": [], "CustomID": [], "hard_bounce": {}}]',
    b'[{"event": "bounce", "hard_bounce": "yes", "MessageID": "-5", "time": -99999999999999}]',
    b'[{"event": "open", "time": 1e308, "MessageID": 1e308}]',
    b'[{"event": "open", "time": -1e308, "MessageID": -9223372036854775809}]',
    b'[{"event": "open", "time": 99999999999999999999999999999, "MessageID": ' + b"9" * 4000 + b"}]",
    b'[{"event": "open", "time": -' + b"9" * 5000 + b', "MessageID": ' + b"9" * 5000
    + b', "x": [' + b"1" * 9000 + b"]}]",
    b'[{"event": "open", "time": "1755500000.5", "MessageID": " 12 ", "email": " A@B.C "}]',
    b'[{"event": "sent", "CustomID": "' + b"x" * 100_000 + b'"}]',
    b'[{"event": "sent", "CustomID": "' + base64.b64encode(bytes(range(256)) * 40) + b'"}]',
    b'[{"event": "sent", "email": "' + b"y" * 100_000 + b'@example.org", "MessageID": 1}]',
    b'[{"event": "open", "\\u0000": "\\u0000", "\\ud800": ["\\udfff"]}]',
    b'[{"event": "open", "geo": {"a": [1, {"b": [null, true, 1.5, "x"]}]}}]',
    b'[{"event": "open", "time": 1755500000}, {"event": "open", "time": 1755500000}]',
    b'[{"event": "' + "é€😀".encode() * 1000 + b'"}]',
    b'[{"event": "open", "time": "NaN"}, {"event": "open", "time": "inf"}, {"event": "open", "time": "-0"}]',
]


@pytest.mark.parametrize("raw", ODD_EVENTS, ids=range(len(ODD_EVENTS)))
def test_anything_mailjet_could_send_is_200(client, raw):
    response = post_events(client, raw)
    assert response.status_code == 200, response.data[:300]
    assert set(response.json) == {"received", "new", "matched"}


@pytest.mark.parametrize("raw", [b"[1]", b"[[]]", b'[{"event": "open"}, "x"]', b"[null]", b"1" * 5000,
                                 b"[" + b"1" * 5000 + b"]"],
                         ids=["number", "array", "string", "null", "huge number", "huge in array"])
def test_what_is_no_event_at_all_is_400(client, conn, raw):
    assert_error(post_events(client, raw), 400, "malformed_request")
    assert count_events(conn) == 0


def grouped(count: int, start: int = 0) -> list[dict]:
    return [{"event": "open", "time": 1_755_500_000 + i, "MessageID": 10**15 + i, "email": f"r{i}@example.org"}
            for i in range(start, start + count)]


def test_a_big_grouped_post_is_stored_in_chunks_and_counted_whole(settings, conn, monkeypatch):
    from mailer.services import tracking

    sizes: list[int] = []
    real = tracking.record_events

    def spy(connection, events):  # type: ignore[no-untyped-def]
        sizes.append(len(events))
        return real(connection, events)

    monkeypatch.setattr(tracking, "record_events", spy)
    payload = grouped(10)
    with app_with(settings, events_chunk_size=4) as application:
        response = post_events(application.test_client(), payload + payload[:3])
    assert response.status_code == 200
    assert response.json == {"received": 13, "new": 10, "matched": 0}
    assert sizes == [4, 4, 4, 1]
    assert count_events(conn) == 10


def test_a_chunk_failing_after_others_committed_is_503_and_the_retry_applies_each_event_once(
    settings, conn, monkeypatch
):
    import psycopg

    from mailer.services import tracking

    real = tracking.record_events
    calls = {"n": 0}

    def failing_third(connection, events):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise psycopg.OperationalError("the database went away")
        return real(connection, events)

    payload = grouped(10)
    with app_with(settings, events_chunk_size=4) as application:
        monkeypatch.setattr(tracking, "record_events", failing_third)
        first = post_events(application.test_client(), payload)
        assert_error(first, 503, "database_unavailable")
        assert count_events(conn) == 8  # two chunks committed
        monkeypatch.setattr(tracking, "record_events", real)
        again = post_events(application.test_client(), payload)  # Mailjet retries the whole POST
    assert again.status_code == 200
    assert again.json == {"received": 10, "new": 2, "matched": 0}
    assert count_events(conn) == 10
    fingerprints = conn.execute("SELECT count(DISTINCT fingerprint) FROM mailjet_events").fetchone()[0]
    assert fingerprints == 10


# --- cursors -----------------------------------------------------------------------------------------------


def b64(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


ZERO = "00000000-0000-0000-0000-000000000000"
BAD_CURSORS = {
    "garbage": "!!not a cursor!!",
    "truncated": b64(json.dumps(["2026-01-01T00:00:00+00:00", ZERO]))[:-7],
    "not json": b64("hello"),
    "a string": b64('"x"'),
    "a number": b64("5"),
    "empty list": b64("[]"),
    "three items": b64(json.dumps(["2026-01-01T00:00:00+00:00", ZERO, 1])),
    "number id": b64('["2026-01-01T00:00:00+00:00", 5]'),
    "null id": b64('["2026-01-01T00:00:00+00:00", null]'),
    "list id": b64('["2026-01-01T00:00:00+00:00", ["a"]]'),
    "surrogate id": b64('["2026-01-01T00:00:00+00:00", "\\ud800@example.org"]'),
    "nul id": b64('["2026-01-01T00:00:00+00:00", "a\\u0000b"]'),
    "number time": b64(json.dumps([5, ZERO])),
    "naive time": b64(json.dumps(["2026-01-01T00:00:00", ZERO])),
    "time out of range": b64(json.dumps(["99999-01-01T00:00:00+00:00", ZERO])),
    "year 1 east": b64(json.dumps(["0001-01-01T00:00:00+14:00", ZERO])),
    "year 9999 west": b64(json.dumps(["9999-12-31T23:59:59.999999-14:00", ZERO])),
    "object": b64(json.dumps({"t": "2026-01-01T00:00:00+00:00", "id": "\ud800"}, ensure_ascii=True)),
    "deep": b64("[" * 3000 + "]" * 3000),
    "huge number": b64("[" + "9" * 5000 + "]"),
    "not utf-8": b64(b"\xff\xfe\xfd"),
    "padding only": "====",
    "long": "A" * 5000,
    "nul": "\x00",
}


@pytest.mark.parametrize("path", ["/schedules", "/logs", "/suppressions"])
@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_a_crafted_cursor_is_422_or_a_valid_empty_page(client, auth, path, cursor):
    response = client.get(path, query_string={"cursor": cursor}, headers=auth)
    if response.status_code == 200:  # a well-formed position none of this app's rows follow: an empty page
        assert response.json["items"] == []
    else:
        assert_error(response, 422, "validation_error")
        assert "cursor" in response.json["error"]["details"]


@pytest.mark.parametrize("cursor", ["x", "-1", "0", "1.5", "1e3", "nan", str(2**63), "9" * 5000, "\x00"])
def test_a_crafted_deliveries_cursor_is_422(client, auth, cursor):
    response = client.get(f"/webhooks/{ZERO}/deliveries", query_string={"cursor": cursor}, headers=auth)
    assert_error(response, 422, "validation_error")
    assert "cursor" in response.json["error"]["details"]


@pytest.mark.parametrize("page", ["jobs", "suppressions"])
@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_a_crafted_cursor_on_a_dashboard_page_shows_the_problem(client, auth, conn, page, cursor):
    app_id = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0]
    response = client.get(f"/dashboard/apps/{app_id}/{page}", query_string={"cursor": cursor}, headers=auth)
    assert response.status_code == 200, response.data[:300]


def test_the_jobs_page_with_a_parameter_named_endpoint_links_its_next_page(client, auth, conn):
    assert client.post("/queue", json={"messages": [MESSAGE] * 51}, headers=auth).status_code == 202
    app_id = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0]
    for name in ("endpoint", "_external", "app_id", "_anchor"):
        response = client.get(f"/dashboard/apps/{app_id}/jobs", query_string={name: "x"}, headers=auth)
        assert response.status_code == 200, (name, response.data[:300])
        assert "cursor=" in response.text


# --- schedules: absurd dates --------------------------------------------------------------------------------


def schedule(**changes: object) -> dict:
    return SCHEDULE | {"start_at": "2099-01-01T09:00:00"} | changes


@pytest.mark.parametrize(
    "changes",
    [
        {"start_at": "0001-01-02T00:00:00"},
        {"start_at": "0001-01-01T00:00:00+14:00"},
        {"start_at": "0001-01-01T00:00:00-14:00"},
        {"start_at": "9999-12-31T23:59:59-14:00"},
        {"start_at": "9999-12-31T23:59:59"},
        {"until": "9999-12-31T23:59:59+14:00"},
        {"until": "0001-01-01T00:00:00-01:00"},
        {"start_at": "1900-01-01T00:00:00", "frequency": "YEARLY"},
    ],
    ids=["year 1", "year 1 east", "year 1 west", "year 9999 west", "year 9999", "until 9999", "until year 1",
         "yearly since 1900"],
)
def test_an_absurd_date_is_422_at_once(client, auth, conn, changes):
    started = time.monotonic()
    response = client.post("/schedules", json=schedule(**changes), headers=auth)
    assert time.monotonic() - started < 2.0
    assert_error(response, 422, "validation_error")
    assert set(response.json["error"]["details"]) & {"start_at", "until"}
    assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


def days_ago(days: int) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).replace(microsecond=0, tzinfo=None).isoformat()


def test_a_start_a_year_back_is_accepted_and_older_refused(client, auth):
    accepted = client.post("/schedules", json=schedule(start_at=days_ago(365)), headers=auth)
    assert accepted.status_code == 201, accepted.json
    refused = client.post("/schedules", json=schedule(start_at=days_ago(368)), headers=auth)
    assert_error(refused, 422, "validation_error")
    assert "MAILER_SCHEDULE_MAX_PAST_DAYS" in refused.json["error"]["details"]["start_at"][0]
    created = accepted.json["id"]
    moved = client.patch(f"/schedules/{created}", json={"start_at": days_ago(400)}, headers=auth)
    assert_error(moved, 422, "validation_error")


# The worst rules the limits allow: the oldest start, the smallest interval, the largest count, the latest until,
# rules that skip most of their periods. On a loaded 2-core box each answer stays well under the bound.
def worst_rules() -> list[dict]:
    """Rules that cost the most to expand. Made when a test runs: the tick test counts on its daily rules
    falling at the time of day it runs, and a constant made at collection was minutes stale in a full run
    (more than the scheduler's MISSED_AFTER, so the occurrence of the day counted as missed)."""
    return [
        {"start_at": days_ago(365), "frequency": "DAILY", "interval": 1, "count": 100_000},
        {"start_at": days_ago(365), "frequency": "DAILY", "interval": 1, "until": "9999-12-30T00:00:00"},
        {"start_at": days_ago(365), "frequency": "WEEKLY", "interval": 1, "count": None},
        {"start_at": "2028-02-29T09:00:00", "frequency": "YEARLY", "interval": 1000, "count": 100_000},
        {"start_at": "2027-01-31T09:00:00", "frequency": "MONTHLY", "interval": 1, "until": "9999-12-30T00:00:00"},
        {"start_at": "9999-12-29T23:00:00", "frequency": "DAILY", "interval": 1000, "timezone": "UTC-14"},
        {"start_at": "2099-01-01T00:00:00", "frequency": "MONTHLY", "interval": 1000, "timezone": "Pacific/Kiritimati"},
    ]


def test_the_worst_rules_answer_in_bounded_time(client, auth):
    for changes in worst_rules():
        started = time.monotonic()
        response = client.post("/schedules", json=schedule(**changes), headers=auth)
        assert response.status_code in (201, 422), response.json
        assert time.monotonic() - started < 2.0, changes
    started = time.monotonic()
    listed = client.get("/schedules", headers=auth)
    assert listed.status_code == 200
    assert time.monotonic() - started < 3.0
    assert len(listed.json["items"]) >= 5


def test_the_scheduler_tick_over_the_worst_rules_is_bounded(client, auth, database_url):
    import psycopg

    from mailer.services import scheduling

    for changes in worst_rules()[:3]:
        assert client.post("/schedules", json=schedule(**changes), headers=auth).status_code == 201
    started = time.monotonic()
    with psycopg.connect(database_url) as conn:
        ticked = scheduling.tick(conn, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2), batch_size=50)
    assert time.monotonic() - started < 5.0
    assert ticked.jobs >= 3


# --- headers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["X-MJ-MonitoringCategory", "x-mj-monitoringcategory", "X-MJ-NotYetInvented"])
def test_every_x_mj_header_is_422_naming_it(client, auth, conn, name):
    response = client.post("/queue", json=MESSAGE | {"headers": {name: "x"}}, headers=auth)
    assert_error(response, 422, "validation_error")
    assert name in json.dumps(response.json["error"]["details"]["headers"])
    batch = client.post("/queue", json={"messages": [MESSAGE, MESSAGE | {"headers": {name: "x"}}]}, headers=auth)
    assert_error(batch, 422, "validation_error")
    assert "1" in batch.json["error"]["details"]["messages"]
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_events_need_their_own_credentials_even_with_hostile_bodies(client):
    assert post_events(client, nested(5000), headers={}).status_code == 401
    assert post_events(client, "[]", headers=MAILJET).status_code == 200


# --- property: any JSON Mailjet could post ------------------------------------------------------------------

MAILJET_FIELDS = ["event", "time", "MessageID", "Message_GUID", "email", "mj_campaign_id", "mj_contact_id",
                  "customcampaign", "CustomID", "Payload", "hard_bounce", "error", "url", "geo", "agent"]


def _json_values():  # type: ignore[no-untyped-def]
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
               | st.sampled_from(["open", "bounce", "sent", " Blocked ", "unsub", "1755500000", "12", ZERO]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def test_any_json_in_any_mailjet_field_is_200(app):
    import hypothesis
    from hypothesis import strategies as st

    client = app.test_client()
    event = st.dictionaries(st.sampled_from(MAILJET_FIELDS) | st.text(max_size=8), _json_values(), max_size=8)

    @hypothesis.given(body=st.one_of(event, st.lists(event, max_size=5)))
    @hypothesis.settings(max_examples=100, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def run(body: object) -> None:
        response = post_events(client, json.dumps(body, allow_nan=True))
        assert response.status_code == 200, (body, response.data[:300])

    run()


@pytest.mark.parametrize("send_at", ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00+00:00",
                                     "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59+00:00"])
def test_moving_a_job_out_of_range_is_422_and_the_job_stays_readable(client, auth, send_at):
    job = client.post("/queue", json=MESSAGE | {"send_at": "2099-01-01T00:00:00Z"}, headers=auth).json["id"]
    response = client.patch(f"/queue/{job}", json={"send_at": send_at}, headers=auth)
    assert_error(response, 422, "validation_error")
    assert "send_at" in response.json["error"]["details"]
    status = client.get(f"/status/{job}", headers=auth)
    assert status.status_code == 200
    assert status.json["send_at"].startswith("2099-01-01")


def test_a_schedule_stored_with_a_year_one_start_is_cheap_to_show_and_tick(client, auth, conn, database_url):
    import psycopg

    from mailer.services import scheduling

    created = client.post("/schedules", json=schedule(start_at="2099-01-01T09:00:00", count=None), headers=auth).json
    # As the issue found it: stored before start_at was bounded, or running since the year 1.
    # Due at yesterday's 09:00 UTC and ticked an hour later, so the next daily 09:00 is never due too (with
    # `now() - 1 h` the test failed when run between 09:00 and 10:00 UTC).
    due = conn.execute(
        "UPDATE schedules SET start_local = '0001-01-02 09:00',"
        " next_occurrence = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '15 hours'"
        " WHERE id = %s RETURNING next_occurrence", (created["id"],)
    ).fetchone()[0]
    conn.commit()
    started = time.monotonic()
    listed = client.get("/schedules", headers=auth)
    shown = client.get(f"/schedules/{created['id']}", headers=auth)
    assert time.monotonic() - started < 1.0  # 1 s per such schedule before
    assert listed.status_code == shown.status_code == 200
    assert len(shown.json["upcoming"]) == 5
    started = time.monotonic()
    with psycopg.connect(database_url) as other:
        ticked = scheduling.tick(other, now=due + dt.timedelta(hours=1), batch_size=50)
    assert time.monotonic() - started < 2.0
    assert ticked.jobs == 1
