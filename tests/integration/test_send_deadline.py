"""A claim starts no Mailjet call after its window (MAILER_SEND_CALL_WINDOW_S); a revoked app's maybe-sent jobs are
asked about."""

from __future__ import annotations

import dataclasses
import logging
import time

import requests
from prometheus_client import REGISTRY

from mailer import store
from mailer.services import apps, sending
from tests.integration.conftest import make_key
from tests.integration.sending_support import make_due, message, run_sender, script, sends
from tests.integration.test_send_isolation import app_id_of, insert, mistyped, with_text

GOOD = 15


def slow(simulator: str, latency_s: float) -> None:
    requests.post(f"{simulator}/_sim/config", json={"latency_s": latency_s}, timeout=5).raise_for_status()


def a_claim_refused_as_a_whole(client, auth, conn) -> tuple[list[str], str]:  # type: ignore[no-untyped-def]
    """Good jobs and one that makes Mailjet refuse their shared call (a global 400): sent one by one after."""
    good = [j["id"] for j in client.post(
        "/queue", json={"messages": [message(f"r{i}@example.org") for i in range(GOOD)]}, headers=auth).json["jobs"]]
    make_key(conn, "careless")
    (bad,) = insert(conn, app_id_of(conn, "careless"), mistyped("ann@example.org"))
    return good, bad


def released_untouched(conn, job_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    for job_id in job_ids:
        status, attempts, verify = conn.execute(
            "SELECT status, attempts, verify_before_send FROM jobs WHERE id = %s", [job_id]).fetchone()
        assert (status, attempts, verify) == ("queued", 0, False)  # never sent: no lookup, no attempt counted
        last = conn.execute("SELECT type FROM job_events WHERE job_id = %s ORDER BY id DESC LIMIT 1",
                            [job_id]).fetchone()
        assert last == ("released",)


def test_a_slow_one_by_one_resend_stops_at_the_claims_window(
    client, auth, send_settings, simulator, conn
) -> None:
    # 16 calls of 0.5 s would take 8 s; no call may start after 4 s.
    settings = dataclasses.replace(send_settings, mailjet_timeout_s=1.0, send_call_window_s=4.0)
    assert sending.call_window_s(settings) == 4.0
    good, bad = a_claim_refused_as_a_whole(client, auth, conn)
    slow(simulator, 0.5)

    released_before = REGISTRY.get_sample_value("mailer_send_released_total") or 0
    started = time.monotonic()
    outcome = run_sender(settings)
    elapsed = time.monotonic() - started

    assert elapsed < 4.0 + 1.0 + 1.0  # the window, the last call's timeout, a second to record it
    assert REGISTRY.get_sample_value("mailer_send_released_total") == released_before + outcome.released
    assert outcome.claimed == GOOD + 1 and outcome.released >= 1
    assert outcome.sent + outcome.failed + outcome.released == GOOD + 1 and outcome.retried == 0
    sent_once = sends(simulator)["by_custom_id"]
    assert set(sent_once.values()) == {1}
    untried = [row[0] for row in conn.execute("SELECT id::text FROM jobs WHERE status = 'queued'")]
    assert len(untried) == outcome.released and not set(untried) & set(sent_once)
    released_untouched(conn, untried)

    slow(simulator, 0.0)
    while run_sender(settings).claimed:
        pass
    assert sends(simulator)["by_custom_id"] == {job_id: 1 for job_id in good}  # each once, in the end
    assert conn.execute("SELECT status FROM jobs WHERE id = %s", [bad]).fetchone() == ("failed",)


def test_the_wait_for_the_shared_call_cap_stops_at_the_deadline_too(
    client, auth, send_settings, simulator, conn
) -> None:
    # One call a second for all workers: 16 calls take 15 s; no call may start after 4 s.
    settings = dataclasses.replace(
        send_settings, mailjet_timeout_s=1.0, send_call_window_s=4.0, mailjet_max_calls_per_s=1.0,
    )
    good, _bad = a_claim_refused_as_a_whole(client, auth, conn)

    started = time.monotonic()
    outcome = run_sender(settings)
    elapsed = time.monotonic() - started

    assert elapsed < 4.0 + 1.0 + 1.0
    assert outcome.released >= GOOD - 6  # about four calls in the window
    assert sends(simulator)["calls"] <= 1 + 5
    sent_once = sends(simulator)["by_custom_id"]
    assert set(sent_once.values()) <= {1}
    released_untouched(conn, [job_id for job_id in good if job_id not in sent_once])


def test_a_lookup_not_made_before_the_deadline_keeps_its_job_verified(
    client, auth, send_settings, simulator, conn
) -> None:
    settings = dataclasses.replace(
        send_settings, mailjet_timeout_s=1.0, send_call_window_s=4.0, mailjet_max_calls_per_s=1.0,
    )
    ids = [j["id"] for j in client.post(
        "/queue", json={"messages": [message(f"r{i}@example.org") for i in range(8)]}, headers=auth).json["jobs"]]
    conn.execute("UPDATE jobs SET verify_before_send = true")

    outcome = run_sender(settings)

    # A lookup a second for about four seconds: some jobs are never asked about, and the send call of
    # those asked about may not fit in the window either.
    assert outcome.released >= 8 - 5 and outcome.released + outcome.sent == 8
    rows = conn.execute("SELECT status, verify_before_send, attempts FROM jobs WHERE id = ANY(%s::uuid[])",
                        [ids]).fetchall()
    assert sorted(status for status, *_ in rows) == ["queued"] * outcome.released + ["sent"] * outcome.sent
    assert all(verify and attempts == 0 for status, verify, attempts in rows if status == "queued")


# --- a revoked app's job whose earlier attempt may have reached Mailjet ---

def maybe_sent(client, auth, simulator, send_settings, conn) -> str:  # type: ignore[no-untyped-def]
    """A queued job whose attempt ended in a 5xx, though Mailjet took it."""
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    script(simulator, "accept_then_500")
    assert run_sender(send_settings).retried == 1
    make_due(conn)
    assert conn.execute("SELECT status, verify_before_send FROM jobs WHERE id = %s", [job_id]).fetchone() == (
        "queued", True)
    return job_id


def test_revoking_leaves_jobs_that_may_have_been_sent_for_the_sender_to_settle(
    client, auth, send_settings, simulator, conn
) -> None:
    delivered = maybe_sent(client, auth, simulator, send_settings, conn)
    lost = client.post("/queue", json=message("bob@example.org"), headers=auth).json["id"]
    conn.execute("UPDATE jobs SET verify_before_send = true, attempts = 1 WHERE id = %s", [lost])  # a 500 came
    waiting = client.post("/queue", json=message("bob@example.org"), headers=auth).json["id"]

    assert apps.revoke_app(conn, "billing").jobs_cancelled == 1
    assert conn.execute("SELECT status FROM jobs WHERE id = %s", [waiting]).fetchone() == ("cancelled",)

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent, outcome.cancelled) == (2, 1, 1)
    assert sends(simulator)["by_custom_id"] == {delivered: 1}  # asked about, never sent again nor anew
    status = dict(conn.execute("SELECT id::text, status FROM jobs").fetchall())
    assert (status[delivered], status[lost]) == ("sent", "cancelled")
    trail = conn.execute("SELECT type, detail FROM job_events WHERE job_id = %s ORDER BY id", [lost]).fetchall()
    assert trail[-1] == ("app_revoked", {"by": "sender", "status": "cancelled"})
    assert run_sender(send_settings).claimed == 0


def test_the_claim_asks_about_a_revoked_apps_maybe_sent_job_instead_of_cancelling_it(
    client, auth, send_settings, simulator, conn
) -> None:
    make_key(conn, "gone")
    apps.revoke_app(conn, "gone")
    # Committed as the app was revoked (the race the claim closes), one of them after an ambiguous attempt.
    plain, retried = insert(conn, app_id_of(conn, "gone"), message("bob@example.org"), message("cy@example.org"))
    conn.execute("UPDATE jobs SET verify_before_send = true WHERE id = %s", [retried])

    claim = store.claim_due_jobs(conn, limit=50)

    assert [str(j.id) for j in claim.cancelled] == [plain]
    assert [(str(j.id), j.revoked) for j in claim.jobs] == [(retried, True)]
    detail = conn.execute("SELECT detail FROM job_events WHERE job_id = %s AND type = 'app_revoked'",
                          [plain]).fetchone()
    assert detail == ({"by": "sender", "status": "cancelled"},)


def test_a_big_claim_retires_its_connection_without_a_warning(
    client, auth, send_settings, simulator, conn, caplog
) -> None:
    job_id = client.post("/queue", json=with_text("ann@example.org", 1100 * 1024), headers=auth).json["id"]
    caplog.set_level(logging.INFO, logger="psycopg.pool")

    assert run_sender(send_settings).sent == 1

    assert sends(simulator)["by_custom_id"] == {job_id: 1}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("discarding expired connection" in r.getMessage() for r in caplog.records)  # it was retired
