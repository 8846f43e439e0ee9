"""Claims tied to their worker's liveness, with real worker processes: a killed worker's jobs are claimable again
within seconds, a paused or slow one is never taken over, and every job is sent exactly once."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from tests.e2e.conftest import BOTH_ROUTES, System, wait_until
from tests.e2e.test_crash_safety import queue_many, simulator, statuses

pytestmark = pytest.mark.e2e


def db(system: System) -> psycopg.Connection:
    return psycopg.connect(system.env["DATABASE_URL"], autocommit=True)


def sender_of(system: System, name: str) -> int:
    """The sender id of a worker process (by its OS pid), once it registered."""
    pid = system.processes[name].pid

    def registered() -> int | None:
        with db(system) as conn:
            row = conn.execute("SELECT id FROM senders WHERE os_pid = %s AND retired_at IS NULL", [pid]).fetchone()
        return None if row is None else row[0]

    return wait_until(registered, 20, 0.1, f"{name} registered as a sender")


def sending_by(system: System, sender_id: int) -> int:
    with db(system) as conn:
        return conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'sending' AND claimed_by = %s", [sender_id]
        ).fetchone()[0]


def recovered(system: System) -> list[tuple]:
    with db(system) as conn:
        return conn.execute("SELECT job_id, detail FROM job_events WHERE type = 'recovered'").fetchall()


def all_sent_once(system: System, ids: list[str], timeout: float) -> None:
    wait_until(lambda: set(statuses(system, ids).values()) == {"sent"}, timeout, 0.5, "every job sent")
    by_custom_id = simulator(system, "/_sim/sends")["by_custom_id"]
    assert {job_id: by_custom_id.get(job_id) for job_id in ids} == {job_id: 1 for job_id in ids}


@BOTH_ROUTES
def test_a_killed_workers_jobs_are_claimable_again_within_10_s(system: System) -> None:
    system.start_worker("worker2")
    first, second = sender_of(system, "worker"), sender_of(system, "worker2")
    simulator(system, "/_sim/config", latency_s=1.5)
    ids = queue_many(system, 400, "kill-")
    wait_until(lambda: sending_by(system, first) >= 50 and simulator(system, "/_sim/sends")["calls"] >= 1,
               20, 0.05, "the first worker's calls in flight")

    system.stop("worker", signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: sending_by(system, first) == 0, 15, 0.1, "the killed worker's claims released")
    claimable_after = time.monotonic() - killed

    print(f"claimable again {claimable_after:.1f} s after the kill")
    assert claimable_after < 10, f"claimable again {claimable_after:.1f} s after the kill"
    simulator(system, "/_sim/config", latency_s=0.0)
    all_sent_once(system, ids, timeout=90)
    rules = {detail["rule"] for _, detail in recovered(system)}
    assert rules == {"dead"}
    assert sender_of(system, "worker2") == second  # the live worker kept its identity throughout


@pytest.mark.waits
def test_a_worker_paused_for_two_minutes_is_not_taken_over_and_sends_each_job_once(system: System) -> None:
    # The pause may catch a thread between a claim's statement and its commit: with the default
    # MAILER_DB_IDLE_IN_TRANSACTION_TIMEOUT_S (60 s) the server ends that session, the claim is rolled back and
    # the worker gives up its identity on waking (safe: README, Crash safety). This test is about the liveness
    # rules alone, so the pause stays shorter than the idle timeout.
    system.stop("worker")
    system.env["MAILER_DB_IDLE_IN_TRANSACTION_TIMEOUT_S"] = "300"
    system.start_worker("worker")
    system.start_worker("worker2")
    first = sender_of(system, "worker")
    sender_of(system, "worker2")
    simulator(system, "/_sim/config", latency_s=1.5)
    ids = queue_many(system, 300, "pause-")
    wait_until(lambda: sending_by(system, first) >= 50 and simulator(system, "/_sim/sends")["calls"] >= 1,
               20, 0.05, "the first worker's calls in flight")

    system.processes["worker"].send_signal(signal.SIGSTOP)
    try:
        # A claim the worker sent just before the stop still commits in the server: count its claims once the
        # server has finished what it was given (a busy box needs more than the claim's usual milliseconds).
        time.sleep(3)
        paused_with = sending_by(system, first)
        time.sleep(117)  # the default lease (MAILER_SEND_LEASE_S, 300 s) is longer than any plausible pause
        assert sending_by(system, first) == paused_with  # its claims are still its own
        assert recovered(system) == []
    finally:
        system.processes["worker"].send_signal(signal.SIGCONT)

    simulator(system, "/_sim/config", latency_s=0.0)
    all_sent_once(system, ids, timeout=120)
    assert recovered(system) == []  # none taken over
    assert sender_of(system, "worker") == first


def test_a_live_slow_sender_is_never_taken_over(system: System) -> None:
    # Claims that wait their turn in a tight shared cap live far longer than the old time-based takeover
    # (MAILER_SEND_STALLED_AFTER_S, 3 s here): with liveness, only a dead or hung sender is taken over.
    system.stop("worker")
    system.env.update({"MAILER_MAILJET_TIMEOUT_S": "2", "MAILER_SEND_STALLED_AFTER_S": "3",
                       "MAILER_MAILJET_MAX_CALLS_PER_S": "0.25"})
    system.start_worker()
    sender_of(system, "worker")
    simulator(system, "/_sim/config", latency_s=1.0)
    ids = queue_many(system, 200, "slow-")

    all_sent_once(system, ids, timeout=120)

    assert recovered(system) == []
    with db(system) as conn:
        longest = conn.execute(
            "SELECT max(sent.at - claim.at) FROM job_events AS claim"
            " JOIN job_events AS sent ON sent.job_id = claim.job_id AND sent.type = 'sent'"
            " WHERE claim.type = 'sending'"
        ).fetchone()[0]
    assert longest.total_seconds() > 3 * 2  # a claim lived well past the old threshold, untouched
