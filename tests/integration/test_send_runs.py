"""The running sender (services/send_runs.py): while mail trickles in, one wake-up keeps claiming and fills its
batches, later wake-ups hand it their last claim, and an idle single job goes at once."""

from __future__ import annotations

import dataclasses
import threading
import time
import types

import psycopg
import psycopg_pool

from mailer import jobqueue, tasks
from mailer.config import Settings
from mailer.mailjet import send as mailjet
from mailer.services import queueing, send_results, send_runs, sending
from tests.integration.sending_support import message, sends

TRANSACTIONAL = jobqueue.LANE_PRIORITY["transactional"]


def accept(conn: psycopg.Connection, app_id: int) -> None:
    """One single-message POST /queue (counting on a waiting wake-up)."""
    new = queueing.NewJob(message=message("ann@example.org"), priority="transactional", send_at=None)
    queueing.insert(conn, app_id, [new], 50, count_on_waiting=True)


def context(settings: Settings, pool: psycopg_pool.ConnectionPool) -> types.SimpleNamespace:
    """What Procrastinate hands send_due_jobs for a transactional wake-up, with a worker's runtime."""
    client = mailjet.MailjetClient(settings.mailjet_api_url, "key", "secret", timeout=settings.mailjet_timeout_s)
    runtime = types.SimpleNamespace(settings=settings, pool=pool, mailjet=client)
    return types.SimpleNamespace(additional_context={"runtime": runtime},
                                 job=types.SimpleNamespace(priority=TRANSACTIONAL))


def trickle(database_url: str, app_id: int, count: int, every_s: float) -> threading.Thread:
    """A thread that accepts `count` single messages, one every `every_s`."""
    def run() -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            for _ in range(count):
                accept(own, app_id)
                time.sleep(every_s)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def statuses(conn: psycopg.Connection) -> list[tuple[str, int]]:
    return conn.execute("SELECT status, count(*)::int FROM jobs GROUP BY status").fetchall()


def drain(conn: psycopg.Connection, settings: Settings, pool: psycopg_pool.ConnectionPool) -> None:
    """Run wake-ups until nothing is queued: the ones a worker would run for email accepted after the running
    sender ended (a feeder thread starved on a loaded machine pauses longer than a claim's wait)."""
    for _ in range(20):
        if not conn.execute("SELECT EXISTS (SELECT FROM jobs_live)").fetchone()[0]:  # type: ignore[index]
            return
        tasks.send_due_jobs(context(settings, pool))


def test_one_wakeup_keeps_claiming_while_mail_trickles_in_and_fills_its_batches(
    conn, app_id, database_url, pool, send_settings, simulator
):
    settings = dataclasses.replace(send_settings, send_linger_ms=200)
    accept(conn, app_id)
    feeding = trickle(database_url, app_id, 80, 0.01)  # about 100 a second for most of a second
    started = time.monotonic()
    tasks.send_due_jobs(context(settings, pool))  # the one wake-up: no worker runs the others
    took = time.monotonic() - started
    got = sends(simulator)
    feeding.join(10)
    drain(conn, settings, pool)
    assert statuses(conn) == [("sent", 81)]
    assert len(sends(simulator)["messages"]) == 81
    # What the running sender sent: a claim at most every 200 ms while mail comes (plus the first, the barrier's
    # and the last), so about 20 a call; without the linger a claim follows every call at once, a few each.
    assert got["calls"] <= took / 0.2 + 4
    assert got["calls"] <= len(got["messages"]) // 5 + 3


def test_an_idle_single_job_goes_at_once_and_its_wakeup_ends_without_lingering(
    conn, app_id, pool, send_settings, simulator
):
    settings = dataclasses.replace(send_settings, send_linger_ms=1000, send_handoff_wait_ms=2000)
    accept(conn, app_id)
    started = time.monotonic()
    tasks.send_due_jobs(context(settings, pool))
    assert time.monotonic() - started < 0.9  # no linger: its claim after the barrier found nothing
    assert statuses(conn) == [("sent", 1)]
    assert sends(simulator)["calls"] == 1


def test_a_wakeup_fetched_meanwhile_hands_its_last_claim_to_the_running_sender(
    conn, app_id, database_url, pool, send_settings, simulator, monkeypatch
):
    settings = dataclasses.replace(send_settings, send_linger_ms=100, send_handoff_wait_ms=2000)
    claims_by: list[str] = []
    real = sending.send_due_batch

    def counted(*args: object, **kwargs: object) -> send_results.BatchOutcome:
        claims_by.append(threading.current_thread().name)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sending, "send_due_batch", counted)
    accept(conn, app_id)
    feeding = trickle(database_url, app_id, 60, 0.01)
    running = threading.Thread(target=tasks.send_due_jobs, args=(context(settings, pool),), name="running")
    running.start()
    deadline = time.monotonic() + 10
    while claims_by.count("running") < 3:  # past its barrier, claiming while mail comes
        assert time.monotonic() < deadline
        time.sleep(0.005)
    later = threading.Thread(target=tasks.send_due_jobs, args=(context(settings, pool),), name="later")
    started = time.monotonic()
    later.start()
    later.join(5)
    assert not later.is_alive()
    assert time.monotonic() - started < 1.5  # the running sender's next claim, not the wait's end
    assert "later" not in claims_by  # it claimed nothing itself
    feeding.join(10)
    running.join(10)
    assert not running.is_alive()
    drain(conn, settings, pool)
    assert statuses(conn) == [("sent", 61)]


def test_with_no_running_sender_each_wakeup_ends_after_its_barrier_claim(
    conn, app_id, database_url, pool, send_settings, simulator
):
    settings = dataclasses.replace(send_settings, send_run_max_s=0)
    accept(conn, app_id)
    feeding = trickle(database_url, app_id, 40, 0.01)
    time.sleep(0.05)
    tasks.send_due_jobs(context(settings, pool))  # as before: a claim, the barrier, a claim
    feeding.join(10)
    assert sends(simulator)["calls"] <= 2
    assert dict(statuses(conn)).get("queued", 0) > 0  # what came later waits for wake-ups of its own


def test_the_running_sender_ends_at_its_next_short_claim_once_the_worker_is_stopping(
    conn, app_id, database_url, pool, send_settings, simulator, monkeypatch
):
    monkeypatch.setattr(send_runs, "_STOPPING", threading.Event())  # not the process's own
    settings = dataclasses.replace(send_settings, send_linger_ms=100)
    claims = []
    real = sending.send_due_batch

    def counted(*args: object, **kwargs: object) -> send_results.BatchOutcome:
        claims.append(time.monotonic())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sending, "send_due_batch", counted)
    accept(conn, app_id)
    feeding = trickle(database_url, app_id, 150, 0.01)  # a second and a half of mail
    running = threading.Thread(target=tasks.send_due_jobs, args=(context(settings, pool),))
    running.start()
    deadline = time.monotonic() + 10
    while len(claims) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    send_runs.wind_down()
    claims_before = len(claims)
    running.join(10)
    assert not running.is_alive()
    # The claim in flight and the next short one at most; without wind_down it would claim on every 100 ms
    # while mail comes (a second and more). Counted in claims, not seconds, for a loaded machine.
    assert len(claims) - claims_before <= 2
    feeding.join(10)
    assert dict(statuses(conn)).get("queued", 0) > 0  # what came later is left to the wake-ups deferred for it
