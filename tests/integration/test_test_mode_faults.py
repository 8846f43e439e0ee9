"""Test mode when things go wrong: a failure recording its events, Mailjet failing a mixed batch, suppressed
recipients, an app's mode changed in SQL; and its jobs counted apart from live mail."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from prometheus_client import REGISTRY

from mailer.services import apps, liveness, send_recording, tracking
from mailer.store.jobs import ClaimedJob
from tests.integration.sending_support import message, run_sender, script, sends

DOMAIN = "simulator.mailer.test"


@pytest.fixture
def test_auth(conn: psycopg.Connection) -> dict[str, str]:
    _, key = apps.create_app(conn, "sandbox", test=True)
    return {"Authorization": f"Bearer {key}"}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _job(conn: psycopg.Connection, job_id: str) -> tuple:
    return conn.execute("SELECT status, last_error FROM jobs WHERE id = %s", [job_id]).fetchone()


def _recipients(conn: psycopg.Connection, job_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT email, status, message_id IS NOT NULL FROM recipients WHERE job_id = %s ORDER BY kind DESC, position",
        [job_id],
    ).fetchall()


def test_a_failure_recording_test_events_leaves_the_live_jobs_of_the_batch_recorded(
    conn, client, auth, test_auth, send_settings, simulator, monkeypatch
) -> None:
    live = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    test = client.post("/queue", json=message(f"opened@{DOMAIN}"), headers=test_auth).json["id"]
    sender = liveness.current()
    identity = sender.sender_id
    lost = _sample("mailer_test_mode_events_lost_total")

    def fails(conn: psycopg.Connection, events: object) -> object:
        conn.execute("SELECT 1 / 0")  # a database error: it aborts the transaction it runs in
        raise AssertionError("unreachable")

    monkeypatch.setattr(tracking, "record_events", fails)
    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent, outcome.retried) == (2, 2, 0)
    accepted = {m["custom_id"]: m["recipients"][0]["message_id"] for m in sends(simulator)["messages"]}
    stored = conn.execute("SELECT message_id::text FROM recipients WHERE job_id = %s", [live]).fetchone()
    assert list(accepted) == [live] and stored == (accepted[live],)
    assert _job(conn, live) == ("sent", None)
    # Documented: the test job stays `sent` (with its MessageID), without events.
    assert _job(conn, test) == ("sent", None)
    assert _recipients(conn, test) == [(f"opened@{DOMAIN}", "sent", True)]
    assert conn.execute("SELECT count(*) FROM mailjet_events").fetchone() == (0,)
    assert sender.sender_id == identity and sender.healthy(identity)  # not given up
    assert _sample("mailer_test_mode_events_lost_total") == lost + 1


@pytest.mark.parametrize("failure", ["500", "unreachable"])
def test_a_mixed_batch_whose_mailjet_call_fails_sends_the_test_jobs_and_retries_the_live_ones(
    conn, client, auth, test_auth, settings, send_settings, simulator, failure
) -> None:
    if failure == "500":
        script(simulator, "500")
    live = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    test = client.post("/queue", json=message(f"clicked@{DOMAIN}"), headers=test_auth).json["id"]

    outcome = run_sender(send_settings if failure == "500" else settings)  # settings: nothing listens there

    assert (outcome.claimed, outcome.sent, outcome.retried) == (2, 1, 1)
    status, error = _job(conn, live)
    assert status == "queued" and error
    assert _job(conn, test) == ("sent", None)
    assert _recipients(conn, test) == [(f"clicked@{DOMAIN}", "clicked", True)]


def test_a_test_jobs_suppressed_recipient_is_left_out_and_the_others_keep_their_own_events(
    conn, client, test_auth, settings
) -> None:
    assert client.post("/suppressions", json={"email": "ann@example.org"}, headers=test_auth).status_code == 201
    body = message("ann@example.org")
    body["to"].append({"email": f"opened@{DOMAIN}"})
    body["cc"] = [{"email": f"bounced@{DOMAIN}"}]
    job_id = client.post("/queue", json=body, headers=test_auth).json["id"]

    assert run_sender(settings).sent == 1

    assert _recipients(conn, job_id) == [
        ("ann@example.org", "suppressed", False),
        (f"opened@{DOMAIN}", "opened", True),
        (f"bounced@{DOMAIN}", "bounced", True),
    ]
    events = conn.execute(
        "SELECT DISTINCT e.email, r.email FROM mailjet_events e JOIN recipients r ON r.message_id = e.message_id"
    ).fetchall()
    assert events and all(event_email == recipient_email for event_email, recipient_email in events)


def test_an_apps_mode_never_changes(conn, test_auth, api_key) -> None:
    for name, value in (("sandbox", False), ("default", True)):
        app_name = name if name == "sandbox" else conn.execute("SELECT name FROM apps WHERE NOT test").fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation, match="never changes"):
            conn.execute("UPDATE apps SET test = %s WHERE name = %s", [value, app_name])
        conn.rollback()
    conn.execute("UPDATE apps SET test = test, name = 'sandbox2' WHERE name = 'sandbox'")  # other columns may
    assert conn.execute("SELECT test FROM apps WHERE name = 'sandbox2'").fetchone() == (True,)


def test_a_claimed_job_must_say_whether_it_is_a_test_job() -> None:
    with pytest.raises(TypeError, match="test"):
        ClaimedJob(id=uuid.uuid4(), app_id=1, priority="transactional", message={}, attempts=1,  # type: ignore[call-arg]
                   verify_before_send=False)


def test_test_jobs_are_counted_apart_from_live_ones(conn, client, auth, test_auth, settings) -> None:
    live_failed = sum(_sample("mailer_jobs_total", status="failed", priority=p) for p in ("transactional", "bulk"))
    live_queued = _sample("mailer_jobs_total", status="queued", priority="transactional")
    test_failed = _sample("mailer_test_mode_jobs_total", status="failed")
    test_queued = _sample("mailer_test_mode_jobs_total", status="queued")
    client.post("/queue", json=message(f"rejected@{DOMAIN}"), headers=test_auth)

    assert run_sender(settings).failed == 1

    assert _sample("mailer_test_mode_jobs_total", status="queued") == test_queued + 1
    assert _sample("mailer_test_mode_jobs_total", status="failed") == test_failed + 1
    assert _sample("mailer_jobs_total", status="queued", priority="transactional") == live_queued
    assert sum(_sample("mailer_jobs_total", status="failed", priority=p) for p in ("transactional", "bulk")) \
        == live_failed


def test_test_mode_counts_once_when_recording_is_tried_again(conn, client, test_auth, settings, monkeypatch) -> None:
    client.post("/queue", json=message(f"clicked@{DOMAIN}"), headers=test_auth)
    before = {name: _sample("mailer_test_mode_events_total", type=name) for name in ("sent", "open", "click")}
    answered = _sample("mailer_test_mode_messages_total", outcome="accepted")
    real, calls = send_recording.record, []

    def fails_at_commit_once(conn: psycopg.Connection, *args: object, **kwargs: object) -> object:
        outcome = real(conn, *args, **kwargs)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 1:  # everything recorded, then lost with the connection: rolled back, tried again
            raise psycopg.OperationalError("the database is away")
        return outcome

    monkeypatch.setattr(send_recording, "record", fails_at_commit_once)
    assert run_sender(settings).sent == 1

    assert len(calls) == 2
    after = {name: _sample("mailer_test_mode_events_total", type=name) for name in before}
    assert {name: after[name] - before[name] for name in before} == {"sent": 1, "open": 1, "click": 1}
    assert _sample("mailer_test_mode_messages_total", outcome="accepted") == answered + 1
