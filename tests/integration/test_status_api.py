"""GET /status/{id}: the whole story of a job, in exactly the shape SPEC.md documents."""

from __future__ import annotations

import datetime as dt
import re

import psycopg

from mailer import store
from tests.integration.sending_support import run_sender

JOB_KEYS = ["id", "status", "priority", "created_at", "updated_at", "send_at", "attempts", "last_error", "metadata",
            "schedule_id", "template", "test", "recipients", "events"]
RECIPIENT_KEYS = ["email", "kind", "message_id", "status", "events"]
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def message(**extra: object) -> dict:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org", "name": "Ann"}],
            "subject": "Invoice", "text": "hi", **extra}


def parse(timestamp: str) -> dt.datetime:
    assert RFC3339_UTC.match(timestamp), timestamp
    return dt.datetime.fromisoformat(timestamp)


def get_status(client, auth, job_id: str) -> dict:
    response = client.get(f"/status/{job_id}", headers=auth)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def assert_shape(story: dict) -> None:
    """Every documented key, in the documented order, with the documented types."""
    assert list(story) == JOB_KEYS
    assert isinstance(story["id"], str)
    assert story["status"] in {"scheduled", "queued", "sending", "sent", "failed", "suppressed", "cancelled"}
    assert story["priority"] in {"transactional", "bulk"}
    created, updated = parse(story["created_at"]), parse(story["updated_at"])
    assert created <= updated
    assert story["send_at"] is None or parse(story["send_at"])
    assert isinstance(story["attempts"], int)
    assert not isinstance(story["attempts"], bool)
    assert story["last_error"] is None or isinstance(story["last_error"], str)
    assert isinstance(story["metadata"], dict)
    assert isinstance(story["recipients"], list)
    assert story["recipients"]
    for recipient in story["recipients"]:
        assert list(recipient) == RECIPIENT_KEYS
        assert recipient["kind"] in {"to", "cc", "bcc"}
        assert recipient["message_id"] is None or (
            isinstance(recipient["message_id"], str) and recipient["message_id"].isdigit()
        )
        assert isinstance(recipient["status"], str)
        for event in recipient["events"]:
            assert list(event) == ["type", "at"]
            parse(event["at"])
    assert isinstance(story["events"], list)
    assert story["events"]
    for event in story["events"]:
        assert list(event)[:2] == ["type", "at"]
        assert set(event) <= {"type", "at", "detail"}
        parse(event["at"])
    times = [parse(event["at"]) for event in story["events"]]
    assert times == sorted(times)


def test_a_new_scheduled_job_shows_everything(client, auth):
    before = dt.datetime.now(dt.UTC)
    send_at = (before + dt.timedelta(days=3)).replace(microsecond=0).astimezone(dt.timezone(dt.timedelta(hours=9)))
    metadata = {"order_id": 1001, "tags": ["a", "b"], "nested": {"ok": True, "none": None}, "name": "Zo\u00eb \u2709",
                "big": 2**62, "ratio": 0.25}
    body = message(
        cc=[{"email": "cy@example.org"}],
        bcc=[{"email": "dee@example.org"}, {"email": "ed@example.org"}],
        to=[{"email": "ann@example.org"}, {"email": "bob@example.org"}],
        metadata=metadata,
        priority="bulk",
        send_at=send_at.isoformat(),
    )
    job_id = client.post("/queue", json=body, headers=auth).json["id"]

    story = get_status(client, auth, job_id)

    assert_shape(story)
    assert story["id"] == job_id
    assert (story["status"], story["priority"]) == ("scheduled", "bulk")
    assert (story["attempts"], story["last_error"]) == (0, None)
    assert story["metadata"] == metadata
    assert parse(story["send_at"]) == send_at
    assert story["send_at"] == send_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert before - dt.timedelta(seconds=5) <= parse(story["created_at"]) <= dt.datetime.now(dt.UTC)
    assert [(r["email"], r["kind"]) for r in story["recipients"]] == [
        ("ann@example.org", "to"), ("bob@example.org", "to"), ("cy@example.org", "cc"), ("dee@example.org", "bcc"),
        ("ed@example.org", "bcc"),
    ]
    assert all(r["status"] == "pending" and r["message_id"] is None and r["events"] == [] for r in story["recipients"])
    assert [event["type"] for event in story["events"]] == ["scheduled"]


def test_a_queued_job_has_no_send_at_and_empty_metadata(client, auth):
    job_id = client.post("/queue", json=message(), headers=auth).json["id"]
    story = get_status(client, auth, job_id)
    assert_shape(story)
    assert (story["status"], story["priority"], story["send_at"], story["metadata"]) == (
        "queued", "transactional", None, {}
    )
    assert [event["type"] for event in story["events"]] == ["queued"]


def test_a_sent_job_shows_attempts_message_ids_and_its_audit_trail(client, auth, send_settings):
    body = message(cc=[{"email": "cy@example.org"}], metadata={"order_id": 7})
    job_id = client.post("/queue", json=body, headers=auth).json["id"]
    created = get_status(client, auth, job_id)
    assert run_sender(send_settings).sent == 1

    story = get_status(client, auth, job_id)

    assert_shape(story)
    assert (story["status"], story["attempts"], story["last_error"]) == ("sent", 1, None)
    assert story["metadata"] == {"order_id": 7}
    assert story["created_at"] == created["created_at"]
    assert parse(story["updated_at"]) > parse(created["updated_at"])
    assert [event["type"] for event in story["events"]] == ["queued", "sending", "sent"]
    assert [(r["kind"], r["status"]) for r in story["recipients"]] == [("to", "sent"), ("cc", "sent")]
    ids = [r["message_id"] for r in story["recipients"]]
    assert all(isinstance(i, str) and int(i) > 2**53 for i in ids)
    assert len(set(ids)) == 2  # tracking is per recipient


def test_a_rejected_job_shows_its_error(client, auth, send_settings):
    job_id = client.post("/queue", json=message(to=[{"email": "bob@nowhere.invalid"}]), headers=auth).json["id"]
    assert run_sender(send_settings).failed == 1

    story = get_status(client, auth, job_id)

    assert_shape(story)
    assert (story["status"], story["attempts"]) == ("failed", 1)
    assert "bob@nowhere.invalid" in story["last_error"]
    assert [r["status"] for r in story["recipients"]] == ["failed"]
    assert [event["type"] for event in story["events"]] == ["queued", "sending", "failed"]
    assert story["events"][-1]["detail"]["error"] == story["last_error"]


def test_each_job_of_a_batch_has_its_own_story(client, auth):
    batch = {"messages": [message(metadata={"n": 1}), message(metadata={"n": 2}, to=[{"email": "bob@example.org"}])]}
    first, second = (job["id"] for job in client.post("/queue", json=batch, headers=auth).json["jobs"])
    assert get_status(client, auth, first)["metadata"] == {"n": 1}
    story = get_status(client, auth, second)
    assert story["metadata"] == {"n": 2}
    assert [r["email"] for r in story["recipients"]] == ["bob@example.org"]


def test_an_uppercase_id_is_the_same_job(client, auth):
    job_id = client.post("/queue", json=message(), headers=auth).json["id"]
    assert get_status(client, auth, job_id.upper())["id"] == job_id


def test_status_reads_one_snapshot_while_events_commit(client, auth, send_settings, database_url, monkeypatch):
    # An event committing between the timeline query and the recipients query must not show a recipient
    # `opened` whose timeline lacks the open (seen once, end to end, under load).
    job_id = client.post("/queue", json=message(), headers=auth).json["id"]
    assert run_sender(send_settings).sent == 1
    read_timelines = store.list_recipient_events

    def timelines_then_an_open_commits(conn, **kwargs):  # type: ignore[no-untyped-def]
        rows = read_timelines(conn, **kwargs)
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("UPDATE recipients SET status = 'opened' WHERE job_id = %s", (job_id,))
        return rows

    monkeypatch.setattr(store, "list_recipient_events", timelines_then_an_open_commits)
    story = get_status(client, auth, job_id)

    assert [(r["status"], r["events"]) for r in story["recipients"]] == [("sent", [])]
    monkeypatch.undo()
    assert get_status(client, auth, job_id)["recipients"][0]["status"] == "opened"  # it did commit
