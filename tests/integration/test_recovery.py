"""The recovery sweep: stalled claims, unattended due jobs, events that missed their message."""

from __future__ import annotations

import dataclasses

import psycopg

from mailer import store
from mailer.services import recovery
from tests.integration.test_sending import message


def test_a_stale_claim_is_requeued_to_be_checked_first(client, auth, settings, conn: psycopg.Connection) -> None:
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    claimed = store.claim_due_jobs(conn, limit=50)
    assert [str(job.id) for job in claimed] == [job_id]
    fresh = recovery.sweep(conn, settings)
    assert fresh.stalled == 0  # a live claim is left alone
    conn.execute("UPDATE jobs SET claimed_at = now() - interval '1 hour'")

    swept = recovery.sweep(conn, dataclasses.replace(settings))

    assert swept.stalled == 1
    row = conn.execute("SELECT status, verify_before_send FROM jobs").fetchone()
    assert row == ("queued", True)
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["events"][-1]["type"] == "recovered"


def test_due_jobs_whose_wakeup_vanished_get_a_new_one(client, auth, settings, conn: psycopg.Connection) -> None:
    client.post("/queue", json={"messages": [message(f"r{i}@example.org") for i in range(60)]}, headers=auth)
    conn.execute("DELETE FROM procrastinate_jobs")  # as if a dead worker had taken them
    assert recovery.sweep(conn, settings).unattended == 0  # within the grace period
    conn.execute("UPDATE jobs SET run_at = now() - interval '1 minute'")

    swept = recovery.sweep(conn, settings)

    assert swept.unattended == 60
    wakeups = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'").fetchone()
    assert wakeups == (2,)  # one per batch of 50
    assert recovery.sweep(conn, settings).unattended == 0  # pending wake-ups cover them now


def test_an_event_that_missed_its_message_is_matched_by_the_sweep(client, auth, settings, conn) -> None:
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    message_id = 2**60 + 7
    # The race: the event was stored while the send result was still uncommitted, so neither matched.
    conn.execute(
        "INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, message_id, email, payload)"
        " VALUES ('fp-1', 'open', 'opened', now(), %s, 'ann@example.org', '{}')",
        (message_id,),
    )
    conn.execute("UPDATE recipients SET message_id = %s, status = 'sent'", (message_id,))

    swept = recovery.sweep(conn, settings)

    assert swept.late_events == 1
    recipient = client.get(f"/status/{job_id}", headers=auth).json["recipients"][0]
    assert recipient["status"] == "opened"
    assert [event["type"] for event in recipient["events"]] == ["opened"]
    assert recovery.sweep(conn, settings).late_events == 0
