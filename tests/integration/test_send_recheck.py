"""A lost attempt Mailjet does not list yet: looked up again once MAILER_SEND_LISTING_DELAY_S after it has passed,
never resent before (Mailjet lists an accepted message only some time later)."""

from __future__ import annotations

import dataclasses
import time

import psycopg
import requests

from mailer.config import Settings
from mailer.services import send_results, sending
from tests.integration.sending_support import message, run_sender, script, sends


def lost_attempt(client, auth, settings: Settings, simulator: str, conn: psycopg.Connection, answer: str) -> str:  # type: ignore[no-untyped-def]
    """A job whose attempt's outcome is unknown (Mailjet answered `answer`, a 500), due again at once."""
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    script(simulator, answer)
    assert run_sender(settings).retried == 1
    conn.execute("UPDATE jobs SET run_at = now() WHERE status = 'queued'")  # the backoff only, not the delay
    return str(job_id)


def listing_delay(simulator: str, seconds: float) -> None:
    requests.post(f"{simulator}/_sim/config", json={"listing_delay_s": seconds}, timeout=5).raise_for_status()


def job_row(conn: psycopg.Connection, job_id: str) -> tuple:
    return conn.execute(
        "SELECT status, verify_before_send, attempts, lost_attempt_at IS NOT NULL,"
        " round(extract(epoch FROM run_at - lost_attempt_at)::numeric, 1) FROM jobs WHERE id = %s", (job_id,)
    ).fetchone()


def send_when_due(settings: Settings, timeout_s: float = 20.0) -> send_results.BatchOutcome:
    """Run the sender until it claims something (the job comes due at its recheck time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = run_sender(settings)
        if outcome.claimed:
            return outcome
        time.sleep(0.2)
    raise AssertionError("nothing came due")


def test_an_attempt_mailjet_lists_late_is_looked_up_again_not_sent_twice(
    client, auth, send_settings, simulator, conn
) -> None:
    settings = dataclasses.replace(send_settings, send_listing_delay_s=3.0)
    listing_delay(simulator, 2.0)
    job_id = lost_attempt(client, auth, settings, simulator, conn, "accept_then_500")
    [first] = [m for m in sends(simulator)["messages"] if m["custom_id"] == job_id]

    outcome = run_sender(settings)  # at once: Mailjet does not list it yet

    assert (outcome.claimed, outcome.rechecked, outcome.sent) == (1, 1, 0)
    assert sends(simulator)["by_custom_id"] == {job_id: 1}
    assert job_row(conn, job_id) == ("queued", True, 1, True, 3)  # uncounted, still checked, due at +3 s
    [(detail,)] = conn.execute(
        "SELECT detail FROM job_events WHERE job_id = %s AND type = 'recheck'", (job_id,)
    ).fetchall()
    assert "not listed by Mailjet yet" in detail["reason"]
    woken = conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo' AND scheduled_at ="
        " (SELECT run_at FROM jobs WHERE id = %s)", (job_id,)
    ).fetchone()
    assert woken == (1,)  # a wake-up at its recheck time

    outcome = send_when_due(settings)  # listed by now: found

    assert (outcome.claimed, outcome.sent, outcome.rechecked) == (1, 1, 0)
    assert sends(simulator)["by_custom_id"] == {job_id: 1}  # sent once
    recipients = client.get(f"/status/{job_id}", headers=auth).json["recipients"]
    assert [(r["email"], r["message_id"], r["status"]) for r in recipients] == [
        ("ann@example.org", first["recipients"][0]["message_id"], "sent")]
    assert job_row(conn, job_id)[:4] == ("sent", False, 2, False)


def test_an_attempt_that_never_reached_mailjet_is_sent_once_after_the_delay(
    client, auth, send_settings, simulator, conn
) -> None:
    settings = dataclasses.replace(send_settings, send_listing_delay_s=2.0)
    job_id = lost_attempt(client, auth, settings, simulator, conn, "500")

    assert run_sender(settings).rechecked == 1
    assert sends(simulator)["calls"] == 1  # the lost one only
    started = time.monotonic()

    outcome = send_when_due(settings)

    assert time.monotonic() - started > 0.5  # it waited for the delay (due 2 s after the lost attempt)
    assert (outcome.sent, outcome.rechecked) == (1, 0)
    assert sends(simulator)["by_custom_id"] == {job_id: 1}
    assert job_row(conn, job_id)[:4] == ("sent", False, 2, False)


def test_no_listing_delay_sends_at_once_as_before(client, auth, send_settings, simulator, conn) -> None:
    settings = dataclasses.replace(send_settings, send_listing_delay_s=0.0)
    job_id = lost_attempt(client, auth, settings, simulator, conn, "500")

    outcome = run_sender(settings)

    assert (outcome.sent, outcome.rechecked) == (1, 0)
    assert sends(simulator)["by_custom_id"] == {job_id: 1}


def test_a_revoked_apps_job_not_listed_yet_is_rechecked_not_cancelled(
    client, auth, send_settings, simulator, conn
) -> None:
    settings = dataclasses.replace(send_settings, send_listing_delay_s=3.0)
    listing_delay(simulator, 2.0)
    job_id = lost_attempt(client, auth, settings, simulator, conn, "accept_then_500")
    conn.execute("UPDATE apps SET revoked_at = now()")

    assert run_sender(settings).rechecked == 1
    outcome = send_when_due(settings)

    assert (outcome.sent, outcome.cancelled) == (1, 0)  # Mailjet had it: sent, not cancelled
    assert sends(simulator)["by_custom_id"] == {job_id: 1}


def test_a_taken_over_claim_remembers_when_its_attempt_was_made(client, auth, conn) -> None:
    from mailer import store
    from mailer.store import recovery as recovery_store
    from mailer.store import senders as senders_store

    for to in ("ann@example.org", "bob@example.org"):
        assert client.post("/queue", json=message(to), headers=auth).status_code == 202
    store.claim_due_jobs(conn, limit=2)  # no sender: recovered by age (legacy)
    [(dead,)] = conn.execute(
        "INSERT INTO senders (backend_pid, host, os_pid, retired_at, retired_because)"
        " VALUES (0, 'gone', 0, now(), 'dead') RETURNING id"
    ).fetchall()
    conn.execute(
        "UPDATE jobs SET claimed_at = now() - interval '100 seconds',"
        " claimed_by = CASE WHEN id = (SELECT id FROM jobs ORDER BY id LIMIT 1) THEN %s END", (dead,)
    )
    claimed = dict(conn.execute("SELECT id, claimed_at FROM jobs").fetchall())

    assert len(senders_store.take_over_lost_claims(conn)) == 1
    assert len(recovery_store.requeue_stalled_jobs(conn, stalled_after_s=90)) == 1

    rows = conn.execute("SELECT id, status, verify_before_send, lost_attempt_at FROM jobs").fetchall()
    assert {(status, verify) for _, status, verify, _ in rows} == {("queued", True)}
    assert {job_id: at for job_id, _, _, at in rows} == claimed


def test_a_failed_lookup_keeps_the_time_of_the_lost_attempt(client, auth, send_settings, simulator, conn, pool) -> None:
    from tests.integration.test_send_lookup import _FailingFor

    job_id = lost_attempt(client, auth, send_settings, simulator, conn, "accept_then_500")
    [(lost_at,)] = conn.execute("SELECT lost_attempt_at FROM jobs").fetchall()
    failing = _FailingFor(simulator, job_id)
    try:
        assert sending.send_due_batch(pool, failing, send_settings).retried == 1
    finally:
        failing.close()

    # The lookup's claim sent nothing: waiting for the listing delay counts from the send attempt still.
    assert conn.execute("SELECT status, verify_before_send, lost_attempt_at FROM jobs").fetchall() == [
        ("queued", True, lost_at)]
