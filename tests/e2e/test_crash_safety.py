"""kill -9 a worker in the middle of sends: no job lost, no email sent twice."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.e2e.conftest import System, wait_until

pytestmark = pytest.mark.e2e

# Only claims without a sender (made by a worker of the release before sender liveness) are recovered by age.
FAST_LEGACY_RECOVERY = {"MAILER_MAILJET_TIMEOUT_S": "2", "MAILER_SEND_STALLED_AFTER_S": "3"}


def restart_worker(system: System, **env: str) -> None:
    system.stop("worker")
    system.env.update(env)
    system.start_worker()


def simulator(system: System, path: str, **body: object) -> dict:
    if body:
        response = requests.post(f"{system.simulator_url}{path}", json=body, timeout=5)
    else:
        response = requests.get(f"{system.simulator_url}{path}", timeout=5)
    response.raise_for_status()
    return response.json()


def queue_many(system: System, count: int, tag: str) -> list[str]:
    messages = [
        {"from": {"email": "shop@example.com"}, "to": [{"email": f"{tag}{i}@example.org"}], "subject": "Order",
         "text": "Thanks"}
        for i in range(count)
    ]
    response = requests.post(f"{system.web_url}/queue", json={"messages": messages}, headers=system.auth, timeout=10)
    assert response.status_code == 202, response.text
    return [job["id"] for job in response.json()["jobs"]]


def statuses(system: System, ids: list[str]) -> dict[str, str]:
    return {
        job_id: requests.get(f"{system.web_url}/status/{job_id}", headers=system.auth, timeout=5).json()["status"]
        for job_id in ids
    }


@pytest.mark.parametrize("kill_after_s", [0.0, 0.15, 0.45])
def test_kill_9_during_a_send_loses_nothing_and_sends_nothing_twice(system: System, kill_after_s: float) -> None:
    # Default settings: the restarted worker's takeover check finds the killed one's sender dead.
    simulator(system, "/_sim/config", latency_s=0.6)
    ids = queue_many(system, 5, f"k{int(kill_after_s * 100)}-")

    # Wait until the worker's Mailjet call is in flight (or, for 0.0, just claimed), then kill -9.
    in_flight = lambda: simulator(system, "/_sim/sends")["calls"] >= 1 or kill_after_s == 0.0  # noqa: E731
    wait_until(in_flight, 10, 0.01, "send in flight")
    if kill_after_s == 0.0:
        wait_until(lambda: "sending" in statuses(system, ids).values(), 10, 0.01, "a claim")
    time.sleep(kill_after_s)
    system.stop("worker", signal.SIGKILL)
    simulator(system, "/_sim/config", latency_s=0.0)
    system.start_worker()

    final = wait_until(
        lambda: (s := statuses(system, ids)) and all(v == "sent" for v in s.values()) and s,
        timeout=30, interval=0.2, message="every job sent after recovery",
    )
    assert set(final.values()) == {"sent"}
    by_custom_id = simulator(system, "/_sim/sends")["by_custom_id"]
    assert {job_id: by_custom_id.get(job_id) for job_id in ids} == {job_id: 1 for job_id in ids}


@pytest.mark.parametrize("legacy", [False, True], ids=["with-sender", "before-liveness"])
def test_a_worker_killed_between_claim_and_call_leaves_jobs_that_are_recovered(system: System, legacy: bool) -> None:
    """The claim committed, Mailjet never saw the call: the check finds nothing, so it is sent once."""
    system.stop("worker", signal.SIGKILL)
    ids = queue_many(system, 3, "claimed-")
    # Play the dead worker: register as a sender (or not: a worker of the previous release), claim the jobs
    # exactly as a sender does, then vanish.
    import psycopg

    from mailer import store
    from mailer.store import senders

    with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as liveness_conn:
        sender_id = None if legacy else senders.register_sender(liveness_conn, host="gone", os_pid=1)
        with psycopg.connect(system.env["DATABASE_URL"]) as conn:
            claimed = store.claim_due_jobs(conn, limit=50, sender_id=sender_id)
    assert {str(job.id) for job in claimed} == set(ids)
    restart_worker(system, **(FAST_LEGACY_RECOVERY if legacy else {}))

    wait_until(lambda: set(statuses(system, ids).values()) == {"sent"}, 30, 0.2, "recovered and sent")
    by_custom_id = simulator(system, "/_sim/sends")["by_custom_id"]
    assert [by_custom_id.get(job_id) for job_id in ids] == [1, 1, 1]
