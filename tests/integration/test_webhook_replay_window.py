"""POST /webhooks/{id}/replay: a window of events delivered again with their original webhook-ids, expanded in
the background a bounded chunk at a time, behind live deliveries, resumable without duplicates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator

import psycopg
import pytest

from mailer.config import Settings
from mailer.services import webhook_delivery, webhook_replays
from mailer.store import webhook_replays as replay_store
from tests.integration.conftest import make_key
from tests.integration.webhooks_support import mark_sent, messages, queue, register, set_status
from tests.webhook_receiver import Receiver, running_receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receiver listens on 127.0.0.1; no host rate limit; a small replay lane to see it bound."""
    return dataclasses.replace(
        settings, webhook_allow_private=True, webhook_retry_schedule=(0, 0, 0), webhook_timeout_s=2.0,
        webhook_host_rate_per_s=0, webhook_concurrency=64, webhook_replay_in_flight=50,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def db_now(conn: psycopg.Connection) -> dt.datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def window(conn: psycopg.Connection, since: dt.datetime | None = None) -> dict[str, str]:
    now = db_now(conn)
    return {"since": stamp(since or now - dt.timedelta(hours=1)), "until": stamp(now + dt.timedelta(minutes=1))}


def drain(pool, settings, rounds: int = 50) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        if not webhook_delivery.deliver_due_batch(pool, settings):
            return


def deliveries_of(client, auth, endpoint: dict) -> list[dict]:  # type: ignore[no-untyped-def]
    response = client.get(f"/webhooks/{endpoint['id']}/deliveries?limit=200", headers=auth)
    assert response.status_code == 200
    return list(response.json["items"])


def add_messages(conn: psycopg.Connection, app_id: int, count: int, status: str = "delivered") -> None:
    """`count` stored webhook messages of the app, as webhook_enqueue writes them, 1 ms apart."""
    conn.execute(
        "INSERT INTO webhook_messages (app_id, type, body, created_at)"
        " SELECT %(app)s, 'email.' || %(status)s,"
        "        jsonb_build_object('type', 'email.' || %(status)s, 'data', jsonb_build_object('n', n)),"
        "        clock_timestamp() - make_interval(secs => (%(count)s - n) / 1000.0)"
        " FROM generate_series(1, %(count)s) AS n",
        {"app": app_id, "status": status, "count": count},
    )


def app_of(conn: psycopg.Connection, name: str = "billing") -> int:
    row = conn.execute("SELECT id FROM apps WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_window_is_delivered_again_with_its_original_webhook_ids(client, auth, conn, pool, settings, receiver):
    endpoint = register(client, auth, receiver.url("/ok"))
    jobs = [queue(client, auth, f"r{n}@example.org") for n in range(3)]
    for n, job_id in enumerate(jobs):
        mark_sent(conn, job_id, first_message_id=1000 + n)
    set_status(conn, jobs[0], "delivered")
    drain(pool, settings)
    first = receiver.wait_for(4)
    originals = {request.headers["webhook-id"]: request.body for request in first}
    assert set(originals) == {msg_id for msg_id, _, _ in messages(conn)}

    response = client.post(f"/webhooks/{endpoint['id']}/replay", json=window(conn), headers=auth)

    assert response.status_code == 202, response.data
    assert response.json["queued"] == 4
    assert response.json["status"] == "running"
    drain(pool, settings)
    again = receiver.wait_for(8)[4:]
    assert {request.headers["webhook-id"]: request.body for request in again} == originals
    listed = deliveries_of(client, auth, endpoint)
    assert {d["webhook_id"] for d in listed} == set(originals)
    assert {(d["replay_id"], d["status"]) for d in listed} == {(response.json["id"], "succeeded")}
    assert all(len(d["attempts"]) == 2 for d in listed)  # the first delivery's attempt stays in the log
    progress = client.get(f"/webhooks/{endpoint['id']}/replays/{response.json['id']}", headers=auth).json
    assert (progress["status"], progress["expanded"], progress["queued"]) == ("done", 4, 4)


def test_window_types_and_subscriptions_choose_the_events(client, auth, conn, pool, settings, receiver):
    everything = register(client, auth, receiver.url("/all"))
    bounces = register(client, auth, receiver.url("/bounced"), ["bounced"])
    old = queue(client, auth, "old@example.org")
    mark_sent(conn, old, first_message_id=1)
    conn.commit()
    middle = db_now(conn)
    new = [queue(client, auth, f"n{n}@example.org") for n in range(3)]
    for n, job_id in enumerate(new):
        mark_sent(conn, job_id, first_message_id=10 + n)
    set_status(conn, new[0], "bounced")
    set_status(conn, new[1], "delivered")
    drain(pool, settings)
    receiver.wait_for(6)  # old sent; 3 new sent; bounced and delivered to /all (bounced to /bounced too: 7)
    receiver.wait_for(7)
    base = f"/webhooks/{everything['id']}/replay"

    assert client.post(base, json=window(conn, since=middle), headers=auth).json["queued"] == 5
    assert client.post(f"/webhooks/{bounces['id']}/replay", json=window(conn), headers=auth).json["queued"] == 1
    drain(pool, settings)
    assert client.post(base, json={**window(conn), "types": ["email.sent", "delivered"]},
                       headers=auth).json["queued"] == 5
    drain(pool, settings)
    nothing = client.post(base, json={**window(conn), "types": ["email.opened"]}, headers=auth).json
    assert (nothing["queued"], nothing["status"]) == (0, "done")  # done at once: it blocks no next replay
    drain(pool, settings)

    replayed = receiver.requests[7:]
    sent_ids = {msg_id for msg_id, kind, _ in messages(conn) if kind == "email.sent"}
    assert len(replayed) == 11
    assert sum(1 for r in replayed if r.path == "/bounced") == 1
    assert {r.json["type"] for r in replayed[-5:]} == {"email.sent", "email.delivered"}
    assert {r.headers["webhook-id"] for r in replayed if r.json["type"] == "email.sent"} == sent_ids


BAD_WINDOWS = [
    ({"until": "2026-12-01T00:00:00Z"}, "since"),
    ({"since": "2026-12-01T00:00:00Z"}, "until"),
    ({"since": "2026-12-01T00:00:00", "until": "2026-12-01T01:00:00Z"}, "since"),
    ({"since": "2026-12-01", "until": "2026-12-01T01:00:00Z"}, "since"),
    ({"since": "2026-12-01T00:00:00Z", "until": "yesterday"}, "until"),
    ({"since": "2026-12-01T01:00:00Z", "until": "2026-12-01T01:00:00+00:00"}, "until"),
    ({"since": "2026-12-01T02:00:00+02:00", "until": "2026-12-01T00:00:00Z"}, "until"),
    ({"since": "2026-10-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "since"),
    ({"since": "2099-12-01T00:00:00Z", "until": "2099-12-02T00:00:00Z"}, "since"),
    ({"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "types": ["email.read"]}, "types"),
    ({"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "types": []}, "types"),
    ({"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "types": "email.sent"}, "types"),
    ({"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "extra": 1}, "extra"),
]


def test_bad_windows_are_422_naming_the_field(client, auth, receiver):
    endpoint = register(client, auth, receiver.url("/ok"))
    for body, field in BAD_WINDOWS:
        response = client.post(f"/webhooks/{endpoint['id']}/replay", json=body, headers=auth)

        assert response.status_code == 422, (body, response.data)
        assert field in response.json["error"]["details"], body


def test_other_apps_disabled_endpoints_and_a_second_replay(client, auth, conn, pool, settings, receiver):
    other_auth = {"Authorization": f"Bearer {make_key(conn, 'other')}"}
    endpoint = register(client, auth, receiver.url("/ok"))
    theirs = register(client, other_auth, receiver.url("/theirs"))
    add_messages(conn, app_of(conn), 120)
    add_messages(conn, app_of(conn, "other"), 7)
    url = f"/webhooks/{endpoint['id']}/replay"

    assert client.post(url, json=window(conn), headers=other_auth).status_code == 404
    assert client.post(f"/webhooks/{theirs['id']}/replay", json=window(conn), headers=auth).status_code == 404
    running = client.post(url, json=window(conn), headers=auth)
    assert running.json["queued"] == 120  # the other app's 7 are not counted
    second = client.post(url, json=window(conn), headers=auth)
    assert second.status_code == 409
    assert "still running" in second.json["error"]["message"]
    assert client.post(f"/webhooks/{theirs['id']}/replay", json=window(conn), headers=other_auth).json[
        "queued"] == 7  # one running replay per endpoint, not per installation
    assert client.patch(f"/webhooks/{endpoint['id']}", json={"enabled": False}, headers=auth).status_code == 200
    assert client.post(url, json=window(conn), headers=auth).status_code == 409
    webhook_replays.expand(pool, settings)  # the disabled endpoint's replay stops
    stopped = client.get(f"/webhooks/{endpoint['id']}/replays/{running.json['id']}", headers=auth).json
    assert (stopped["status"], stopped["expanded"]) == ("cancelled", 0)
    assert client.get(f"/webhooks/{endpoint['id']}/replays/{running.json['id']}",
                      headers=other_auth).status_code == 404
    assert client.get(f"/webhooks/{endpoint['id']}/replays/{2**63}", headers=auth).status_code == 404


def test_the_expansion_is_chunked_resumable_and_never_duplicates(client, auth, conn, pool, settings, receiver):
    endpoint = register(client, auth, receiver.url("/ok"))
    add_messages(conn, app_of(conn), 230)
    replay_id = client.post(f"/webhooks/{endpoint['id']}/replay", json=window(conn), headers=auth).json["id"]
    conn.commit()

    # A worker dies in the middle of a chunk: its transaction rolls back with the position.
    with psycopg.connect(settings.database_url) as crashed:
        claimed = replay_store.claim_webhook_replay(crashed, after_id=0)
        assert claimed is not None
        assert replay_store.expand_webhook_replay_chunk(crashed, replay_id=replay_id, max_rows=50)["expanded"] == 50
        crashed.rollback()
    counts = []
    for _ in range(10):
        counts.append(webhook_replays.expand(pool, settings))
        webhook_replays.expand(pool, settings)  # at most 50 wait unattempted: a second round adds none
        conn.execute("UPDATE webhook_deliveries SET status = 'succeeded' WHERE replay_id = %s", (replay_id,))
        conn.commit()

    assert counts[:5] == [50, 50, 50, 50, 30]
    assert sum(counts) == 230
    row = conn.execute(
        "SELECT count(*), count(DISTINCT message_id) FROM webhook_deliveries WHERE replay_id = %s", (replay_id,)
    ).fetchone()
    assert row == (230, 230)
    done = client.get(f"/webhooks/{endpoint['id']}/replays/{replay_id}", headers=auth).json
    assert (done["status"], done["expanded"]) == ("done", 230)


def test_a_live_delivery_is_not_starved_by_a_large_replay(client, auth, conn, pool, settings, receiver):
    endpoint = register(client, auth, receiver.url("/ok"))
    add_messages(conn, app_of(conn), 3000)
    started = time.monotonic()
    response = client.post(f"/webhooks/{endpoint['id']}/replay", json=window(conn), headers=auth)
    assert response.json["queued"] == 3000
    assert time.monotonic() - started < 2.0  # the request only counts; the worker writes the rows
    assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (0,)
    conn.commit()
    for _ in range(3):
        webhook_delivery.deliver_due_batch(pool, settings)
    before = len(receiver.requests)
    live_job = queue(client, auth, "live@example.org")
    mark_sent(conn, live_job, first_message_id=77)
    conn.commit()

    for _ in range(20):
        webhook_delivery.deliver_due_batch(pool, settings)
        if any(r.json["data"].get("job_id") == live_job for r in receiver.requests):
            break
    arrived = [r.json["data"].get("job_id") for r in receiver.requests]
    assert live_job in arrived
    replayed_first = arrived.index(live_job) - before
    # Behind at most the replay's lane (50 waiting unattempted) and one claim's worth of the next top-up.
    assert replayed_first <= settings.webhook_replay_in_flight + webhook_delivery.CLAIM_BATCH
    assert len(receiver.requests) < 3000  # the replay was still going on


def test_the_openapi_document_describes_the_replay(client):
    document = client.get("/openapi.json").json
    paths = document["paths"]
    operation = paths["/webhooks/{endpoint_id}/replay"]["post"]
    assert {"202", "404", "409", "422"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert set(body["properties"]) == {"since", "until", "types"}
    assert set(body["required"]) == {"since", "until"}
    assert "/webhooks/{endpoint_id}/replays/{replay_id}" in paths
