"""One app's payload cannot hurt the batch it shares: bytes per call, a call refused as a whole, revoked apps."""

from __future__ import annotations

import dataclasses

from mailer import store
from mailer.services import apps, queueing
from tests.integration.conftest import make_key
from tests.integration.sending_support import message, run_sender, script, sends

KIB = 1024


def with_text(to: str, size: int) -> dict:
    """A message whose text is `size` characters."""
    return {**message(to), "text": "x" * size}


def insert(conn, app_id: int, *messages: dict) -> list[str]:  # type: ignore[no-untyped-def]
    """Queue messages straight into the store, as POST /queue would (without its validation)."""
    jobs = [queueing.NewJob(message=m) for m in messages]
    return [answer["id"] for answer in queueing.insert(conn, app_id, jobs, batch_size=50)]


def app_id_of(conn, name: str) -> int:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT id FROM apps WHERE name = %s", [name]).fetchone()[0]


def job(conn, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    row = conn.execute("SELECT status, last_error FROM jobs WHERE id = %s", [job_id]).fetchone()
    return {"status": row[0], "last_error": row[1]}


# --- 1. a call carries a bounded number of bytes ---

def test_the_claim_stops_at_the_byte_cap_and_takes_a_too_big_job_alone(client, auth, conn) -> None:
    ids = [client.post("/queue", json=with_text(f"r{i}@example.org", size), headers=auth).json["id"]
           for i, size in enumerate([30 * KIB, 30 * KIB, 30 * KIB, 200 * KIB, 1 * KIB])]
    sizes = dict(conn.execute("SELECT id::text, message_bytes FROM jobs").fetchall())
    assert all(30 * KIB < sizes[i] < 31 * KIB for i in ids[:3])  # the message as JSON text

    first = store.claim_due_jobs(conn, limit=50, max_bytes=64 * KIB)
    assert {str(j.id) for j in first} == set(ids[:2]) and first.more  # a third would pass 64 KiB
    alone = store.claim_due_jobs(conn, limit=50, max_bytes=16 * KIB)
    assert [str(j.id) for j in alone] == ids[2:3] and alone.more  # bigger than the cap: alone, never stuck
    assert [str(j.id) for j in store.claim_due_jobs(conn, limit=50, max_bytes=16 * KIB)] == ids[3:4]
    rest = store.claim_due_jobs(conn, limit=50, max_bytes=16 * KIB)
    assert [str(j.id) for j in rest] == ids[4:] and not rest.more  # all that was due, under every limit
    assert not store.claim_due_jobs(conn, limit=50, max_bytes=16 * KIB).more


def test_a_job_queued_before_the_size_was_kept_is_counted_by_its_stored_size(client, auth, conn) -> None:
    ids = [client.post("/queue", json=with_text(f"r{i}@example.org", 40 * KIB), headers=auth).json["id"]
           for i in range(2)]
    conn.execute("UPDATE jobs SET message_bytes = NULL")  # as migration 0022 leaves older jobs
    claim = store.claim_due_jobs(conn, limit=50, max_bytes=60 * KIB)
    assert len(claim) == 1 and claim.more and str(claim.jobs[0].id) == ids[0]


def test_big_messages_of_one_app_ride_in_calls_of_their_own(client, auth, send_settings, simulator, conn) -> None:
    cap = 64 * KIB
    settings = dataclasses.replace(send_settings, send_max_call_bytes=cap)
    other = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    big = [client.post("/queue", json=with_text(f"big{i}@example.org", 100 * KIB), headers=auth).json["id"]
           for i in range(3)]
    small = client.post("/queue", json={"messages": [message(f"s{i}@example.org") for i in range(20)]},
                        headers=other).json["jobs"]

    outcomes = []
    while (outcome := run_sender(settings)).claimed:
        outcomes.append(outcome)

    seen = sends(simulator)
    assert seen["by_custom_id"] == {job_id: 1 for job_id in big + [j["id"] for j in small]}
    assert [o.claimed for o in outcomes] == [1, 1, 1, 20]  # each big one alone, the small ones together
    assert [o.more for o in outcomes] == [True, True, True, False]
    assert max(seen["call_bytes"][3:]) < cap  # the others' call
    assert all(size < 100 * KIB + 2 * KIB for size in seen["call_bytes"][:3])


# --- 2. a call refused as a whole is sent again one job at a time ---

def mistyped(to: str) -> dict:
    """A message Mailjet refuses with the whole call (a global 400): a header value that is not a string."""
    return {**message(to), "headers": {"X-Order": 1001}}


def test_a_global_400_fails_only_the_job_that_caused_it(client, auth, send_settings, simulator, conn) -> None:
    good = [j["id"] for j in client.post(
        "/queue", json={"messages": [message(f"r{i}@example.org") for i in range(3)]}, headers=auth).json["jobs"]]
    make_key(conn, "careless")
    (bad,) = insert(conn, app_id_of(conn, "careless"), mistyped("ann@example.org"))

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent, outcome.failed, outcome.retried) == (4, 3, 1, 0)
    seen = sends(simulator)
    assert seen["calls"] == 1 + 4  # the call of four, refused; then each alone
    assert seen["by_custom_id"] == {job_id: 1 for job_id in good}  # sent once, never twice
    failed = job(conn, bad)
    assert failed["status"] == "failed"
    assert failed["last_error"].startswith("Mailjet 400") and "Malformed JSON" in failed["last_error"]
    assert conn.execute("SELECT status FROM recipients WHERE job_id = %s", [bad]).fetchone() == ("failed",)
    statuses = {client.get(f"/status/{job_id}", headers=auth).json["status"] for job_id in good}
    assert statuses == {"sent"}
    assert run_sender(send_settings).claimed == 0


def test_a_global_400_on_a_single_job_fails_it_with_mailjets_error(send_settings, simulator, conn) -> None:
    make_key(conn, "careless")
    (bad,) = insert(conn, app_id_of(conn, "careless"), mistyped("ann@example.org"))

    assert run_sender(send_settings).failed == 1
    assert sends(simulator)["calls"] == 1
    assert job(conn, bad) == {
        "status": "failed",
        "last_error": "Mailjet 400 Bad Request: Malformed JSON, please review the syntax and properties types.",
    }


def test_a_transient_error_while_sending_one_by_one_requeues_only_its_job(
    client, auth, send_settings, simulator, conn
) -> None:
    first, second = (client.post("/queue", json=message(f"{n}@example.org"), headers=auth).json["id"]
                     for n in ("ann", "bob"))
    make_key(conn, "careless")
    (bad,) = insert(conn, app_id_of(conn, "careless"), mistyped("cy@example.org"))
    script(simulator, "ok", "429")  # the call of three is refused as a whole, then the first alone meets a 429

    outcome = run_sender(send_settings)

    assert (outcome.sent, outcome.failed, outcome.retried) == (1, 1, 1)
    assert job(conn, first)["status"] == "queued" and "429" in job(conn, first)["last_error"]
    assert job(conn, second)["status"] == "sent"
    assert job(conn, bad)["status"] == "failed"
    assert sends(simulator)["by_custom_id"] == {second: 1}


# --- 3. the claim skips revoked apps ---

def test_the_claim_cancels_a_revoked_apps_job_instead_of_sending_it(
    client, auth, send_settings, simulator, conn
) -> None:
    kept = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    make_key(conn, "gone")
    apps.revoke_app(conn, "gone")
    # A job committed as the app was revoked (the race `mailer apps revoke` cannot close alone).
    late = insert(conn, app_id_of(conn, "gone"), message("bob@example.org"), message("cy@example.org"))

    outcome = run_sender(send_settings)

    assert (outcome.claimed, outcome.sent) == (1, 1)
    assert sends(simulator)["by_custom_id"] == {kept: 1}
    for job_id in late:
        assert job(conn, job_id)["status"] == "cancelled"
        events = [row[0] for row in conn.execute(
            "SELECT type FROM job_events WHERE job_id = %s ORDER BY id", [job_id])]
        assert events == ["queued", "app_revoked"]
    assert run_sender(send_settings).claimed == 0


def test_a_claim_of_only_revoked_jobs_says_more_may_be_due(conn) -> None:
    make_key(conn, "gone")
    make_key(conn, "live")
    apps.revoke_app(conn, "gone")
    insert(conn, app_id_of(conn, "gone"), *[message(f"r{i}@example.org") for i in range(3)])
    (live,) = insert(conn, app_id_of(conn, "live"), message("ann@example.org"))

    first = store.claim_due_jobs(conn, limit=3)
    assert first.jobs == [] and first.more  # three seen, all cancelled: a sender must claim again
    assert [str(j.id) for j in store.claim_due_jobs(conn, limit=3)] == [live]
    assert conn.execute("SELECT count(*) FROM jobs WHERE status = 'cancelled'").fetchone() == (3,)
