"""The sender against the simulator: partial batches, transient failures, no resend of an accepted message."""

from __future__ import annotations

import dataclasses

import requests

from tests.integration.sending_support import make_due, message, run_sender, script, sends


def test_a_partly_failed_batch_is_applied_message_by_message(client, auth, send_settings, simulator, conn) -> None:
    body = {"messages": [message("ann@example.org"), message("bob@nowhere.invalid"), message("cy@example.org")]}
    ids = [job["id"] for job in client.post("/queue", json=body, headers=auth).json["jobs"]]

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent, outcome.failed) == (3, 2, 1)
    assert sends(simulator)["calls"] == 1  # one Mailjet call, answered with HTTP 400 for the whole batch
    first, bad, third = (client.get(f"/status/{job_id}", headers=auth).json for job_id in ids)
    assert first["status"] == third["status"] == "sent"
    assert bad["status"] == "failed"
    assert bad["last_error"].startswith("mj-0013")
    assert "bob@nowhere.invalid" in bad["last_error"]
    assert bad["recipients"][0]["status"] == "failed"
    assert first["recipients"][0]["message_id"] != third["recipients"][0]["message_id"]
    # The successes are final: a second run finds nothing to send again.
    assert run_sender(send_settings).claimed == 0
    assert sends(simulator)["by_custom_id"] == {ids[0]: 1, ids[2]: 1}


def test_a_429_html_page_requeues_with_backoff_and_a_wakeup(client, auth, send_settings, simulator, conn) -> None:
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    script(simulator, "429")

    outcome = run_sender(send_settings)

    assert (outcome.retried, outcome.sent) == (1, 0)
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "queued"
    assert "429" in story["last_error"]
    assert story["events"][-1]["type"] == "retry_scheduled"
    wakeups = conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailer.send_due_jobs' AND scheduled_at IS NOT NULL"
    ).fetchone()
    assert wakeups == (1,)
    make_due(conn)
    assert run_sender(send_settings).sent == 1
    assert client.get(f"/status/{job_id}", headers=auth).json["attempts"] == 2


def test_accepted_then_500_is_checked_with_mailjet_and_never_resent(
    client, auth, send_settings, simulator, conn
) -> None:
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    script(simulator, "accept_then_500")

    assert run_sender(send_settings).retried == 1
    assert conn.execute("SELECT verify_before_send FROM jobs").fetchone() == (True,)
    make_due(conn)
    outcome = run_sender(send_settings)

    assert outcome.sent == 1
    assert sends(simulator)["by_custom_id"] == {job_id: 1}  # the lookup found it: no second send
    assert client.get(f"/status/{job_id}", headers=auth).json["status"] == "sent"


def test_a_500_that_accepted_nothing_is_sent_again_after_the_check(
    client, auth, send_settings, simulator, conn
) -> None:
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    script(simulator, "500")

    assert run_sender(send_settings).retried == 1
    make_due(conn)

    assert run_sender(send_settings).sent == 1
    assert sends(simulator)["by_custom_id"] == {job_id: 1}


def test_retries_run_out_and_the_job_fails(client, auth, send_settings, simulator, conn) -> None:
    settings = dataclasses.replace(send_settings, send_max_attempts=2)
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    script(simulator, "429", "429")

    run_sender(settings)
    make_due(conn)
    outcome = run_sender(settings)

    assert outcome.failed == 1
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "failed"
    assert "gave up after 2 attempts" in story["last_error"]
    assert sends(simulator)["calls"] == 2


def test_transactional_mail_is_claimed_before_a_bulk_backlog(client, auth, send_settings, simulator) -> None:
    bulk = {"messages": [dict(message(f"r{i}@example.org"), priority="bulk") for i in range(60)]}
    client.post("/queue", json=bulk, headers=auth)
    urgent = client.post("/queue", json=message("ceo@example.org"), headers=auth).json["id"]

    run_sender(send_settings)

    assert client.get(f"/status/{urgent}", headers=auth).json["status"] == "sent"


def test_a_timeout_after_mailjet_accepted_is_not_sent_twice(client, auth, send_settings, simulator, conn) -> None:
    settings = dataclasses.replace(send_settings, mailjet_timeout_s=0.5)
    requests.post(f"{simulator}/_sim/config", json={"timeout_s": 1.0}, timeout=5).raise_for_status()
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    script(simulator, "timeout")

    assert run_sender(settings).retried == 1
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "queued"
    assert "timed out" in story["last_error"].lower() or "timeout" in story["last_error"].lower()
    make_due(conn)
    outcome = run_sender(settings)

    assert outcome.sent == 1
    assert sends(simulator)["by_custom_id"] == {job_id: 1}


def test_retry_after_from_mailjet_is_a_floor_for_the_backoff(client, auth, send_settings, simulator, conn) -> None:
    client.post("/queue", json=message("ann@example.org"), headers=auth)
    script(simulator, "429_retry_after")  # HTML 429 with Retry-After: 1; our own backoff is 0.01-0.05 s

    assert run_sender(send_settings).retried == 1

    wait = conn.execute("SELECT extract(epoch FROM run_at - updated_at) FROM jobs").fetchone()
    assert wait is not None
    assert 0.99 <= float(wait[0]) <= 1.5
