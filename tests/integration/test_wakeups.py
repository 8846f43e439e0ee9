"""One waiting wake-up per lane (sql/migrations/0015): email due now counts on it, and the sender that
runs it waits for every request that did before its last claim, so no email waits for the recovery sweep."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import types
from collections.abc import Iterator

import psycopg
import psycopg_pool
import pytest

from mailer import jobqueue, store, tasks
from mailer.config import Settings
from mailer.mailjet import send as mailjet
from mailer.services import queueing, sending, wakeups
from tests.integration.sending_support import message, sends

TRANSACTIONAL, BULK = jobqueue.LANE_PRIORITY["transactional"], jobqueue.LANE_PRIORITY["bulk"]


def waiting(conn: psycopg.Connection) -> list[tuple[int, bool]]:
    """(lane, scheduled?) of every wake-up not yet fetched."""
    return conn.execute(
        "SELECT priority, scheduled_at IS NOT NULL FROM procrastinate_jobs"
        " WHERE task_name = %s AND status = 'todo' ORDER BY id", (jobqueue.SEND_TASK,)
    ).fetchall()


def job(priority: str = "transactional", send_at: dt.datetime | None = None) -> queueing.NewJob:
    return queueing.NewJob(message=message("ann@example.org"), priority=priority, send_at=send_at)


def accept(conn: psycopg.Connection, app_id: int, *jobs: queueing.NewJob) -> None:
    """Store jobs as POST /queue does (counting on a waiting wake-up)."""
    queueing.insert(conn, app_id, jobs, 50, count_on_waiting=True)


@pytest.fixture
def pool(database_url: str) -> Iterator[psycopg_pool.ConnectionPool]:
    with psycopg_pool.ConnectionPool(database_url, min_size=1, max_size=4, open=True) as opened:
        yield opened


def take_wakeup(conn: psycopg.Connection) -> None:
    """What a worker's fetch does to the waiting wake-up (committed before it claims)."""
    conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE status = 'todo'")


def test_email_due_now_counts_on_the_wakeup_waiting_in_its_lane(conn, app_id):
    accept(conn, app_id, job())
    accept(conn, app_id, job())
    assert waiting(conn) == [(TRANSACTIONAL, False)]
    accept(conn, app_id, job("bulk"))
    assert waiting(conn) == [(TRANSACTIONAL, False), (BULK, False)]
    accept(conn, app_id, *[job() for _ in range(120)])  # three batches: the waiting one takes the first
    assert waiting(conn) == [(TRANSACTIONAL, False), (BULK, False), (TRANSACTIONAL, False), (TRANSACTIONAL, False)]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    accept(conn, app_id, job(send_at=later))  # scheduled: its own wake-up at its time
    assert waiting(conn)[-1] == (TRANSACTIONAL, True)
    take_wakeup(conn)
    accept(conn, app_id, job())  # every waiting one is taken: a new one
    assert waiting(conn) == [(TRANSACTIONAL, False)]


def test_a_waiting_wakeup_takes_one_batch_per_lane_and_no_more(conn, app_id):
    # The bounds of 0017's early return: it must defer exactly what the full statement would.
    def lanes_waiting() -> list[tuple[int, bool]]:
        return sorted(waiting(conn))

    accept(conn, app_id, job(), job("bulk"))
    assert lanes_waiting() == [(BULK, False), (TRANSACTIONAL, False)]
    accept(conn, app_id, *[job() for _ in range(25)], *[job("bulk") for _ in range(25)])  # 50: one batch each
    assert lanes_waiting() == [(BULK, False), (TRANSACTIONAL, False)]
    accept(conn, app_id, *[job() for _ in range(51)])  # two batches in one lane: a wake-up for the second
    assert lanes_waiting() == [(BULK, False), (TRANSACTIONAL, False), (TRANSACTIONAL, False)]
    conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE priority = %s", (BULK,))
    accept(conn, app_id, job(), job("bulk"))  # only one lane has a wake-up waiting: one for the other
    assert lanes_waiting() == [(BULK, False), (TRANSACTIONAL, False), (TRANSACTIONAL, False)]
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    accept(conn, app_id, job(), job(send_at=soon))  # one due now, one scheduled: the scheduled one's own
    assert lanes_waiting() == [(BULK, False), (TRANSACTIONAL, False), (TRANSACTIONAL, False), (TRANSACTIONAL, True)]


def test_only_requests_count_on_a_waiting_wakeup_and_take_the_lock(conn, app_id, database_url):
    accept(conn, app_id, job())
    with psycopg.connect(database_url) as other:
        queueing.insert(other, app_id, [job()], 50)  # the scheduler's insert: a wake-up of its own
        wakeups.wake_senders(other, [("transactional", None)], 50)  # a retry's, the recovery sweep's
        held = other.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert held.fetchone() == (0,)
    assert waiting(conn) == [(TRANSACTIONAL, False)] * 3


def test_a_scheduled_wakeup_whose_time_has_come_is_not_counted_on(conn, app_id):
    # No NOTIFY announced it: it may wait for the workers' poll.
    conn.execute("INSERT INTO procrastinate_jobs (queue_name, task_name, priority, scheduled_at)"
                 " VALUES (%s, %s, %s, now() - interval '1 second')",
                 (jobqueue.SEND_QUEUE, jobqueue.SEND_TASK, TRANSACTIONAL))
    accept(conn, app_id, job())
    assert waiting(conn) == [(TRANSACTIONAL, True), (TRANSACTIONAL, False)]


def test_a_sender_waits_for_the_requests_that_counted_on_its_wakeup(conn, app_id, database_url, pool):
    accept(conn, app_id, job())
    with psycopg.connect(database_url) as request:
        accept(request, app_id, job())  # counts on the waiting wake-up; its transaction stays open
        assert waiting(conn) == [(TRANSACTIONAL, False)]
        take_wakeup(conn)
        assert len(store.claim_due_jobs(conn, limit=50)) == 1  # short: the request's email is not committed
        barrier = threading.Thread(target=wakeups.await_wakers, args=(pool,))
        barrier.start()
        barrier.join(0.3)
        assert barrier.is_alive()  # waiting for the request
        request.commit()
        barrier.join(2)
        assert not barrier.is_alive()
    assert len(store.claim_due_jobs(conn, limit=50)) == 1  # the claim after the barrier finds it
    accept(conn, app_id, job())  # after the fetch: a wake-up of its own
    assert waiting(conn) == [(TRANSACTIONAL, False)]


def test_a_sender_gives_up_waiting_after_half_a_second_and_says_so(conn, app_id, database_url, pool, caplog):
    with psycopg.connect(database_url) as request:
        accept(request, app_id, job())
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="mailer.services.wakeups"):
            wakeups.await_wakers(pool)
        assert 0.4 < time.monotonic() - started < 2
        assert "recovery sweep" in caplog.text
        request.rollback()


def task_context(settings: Settings, pool: psycopg_pool.ConnectionPool, lane: int) -> types.SimpleNamespace:
    """What Procrastinate hands send_due_jobs for a wake-up of `lane`, with a worker's runtime."""
    client = mailjet.MailjetClient(settings.mailjet_api_url, "key", "secret", timeout=settings.mailjet_timeout_s)
    runtime = types.SimpleNamespace(settings=settings, pool=pool, mailjet=client)
    return types.SimpleNamespace(additional_context={"runtime": runtime}, job=types.SimpleNamespace(priority=lane))


def test_the_send_task_sends_the_email_of_a_request_that_commits_after_its_claims(
    conn, app_id, database_url, pool, send_settings, simulator
):
    accept(conn, app_id, job())
    context = task_context(send_settings, pool, TRANSACTIONAL)
    with psycopg.connect(database_url) as request:
        accept(request, app_id, job())  # counts on the waiting wake-up
        take_wakeup(conn)
        task = threading.Thread(target=tasks.send_due_jobs, args=(context,))
        task.start()
        deadline = time.monotonic() + 5
        while len(sends(simulator)["messages"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        task.join(0.1)
        assert task.is_alive()  # sent the first; waits for the request before its last claim
        request.commit()
        task.join(5)
        assert not task.is_alive()
    assert len(sends(simulator)["messages"]) == 2
    assert conn.execute("SELECT count(*) FROM jobs WHERE status = 'sent'").fetchone() == (2,)


def test_a_send_task_that_fails_hands_over_to_a_wakeup_two_seconds_later(
    conn, app_id, pool, send_settings, monkeypatch
):
    accept(conn, app_id, job())
    conn.execute("DELETE FROM procrastinate_jobs")

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sending, "send_due_batch", broken)
    context = task_context(send_settings, pool, BULK)
    with pytest.raises(RuntimeError):
        tasks.send_due_jobs(context)
    # Later: an error that repeats must not spin the workers. Scheduled: no request counts on it.
    [(lane, due_in)] = conn.execute(
        "SELECT priority, extract(epoch FROM scheduled_at - now()) FROM procrastinate_jobs WHERE status = 'todo'"
    ).fetchall()
    assert lane == BULK and 1.5 < float(due_in) <= 2.5


def test_a_send_task_that_drains_everything_leaves_no_wakeup(conn, app_id, pool, send_settings, simulator, monkeypatch):
    monkeypatch.setattr(tasks, "MAX_BATCHES_PER_JOB", 2)
    settings = dataclasses.replace(send_settings, send_batch_size=2)
    accept(conn, app_id, *[job() for _ in range(3)])  # full, short (the barrier), nothing
    conn.execute("DELETE FROM procrastinate_jobs")
    context = task_context(settings, pool, BULK)
    tasks.send_due_jobs(context)
    assert conn.execute("SELECT count(*) FROM jobs WHERE status = 'sent'").fetchone() == (3,)
    assert waiting(conn) == []


def test_a_send_task_that_reaches_its_cap_hands_over_to_a_new_wakeup(
    conn, app_id, pool, send_settings, simulator, monkeypatch
):
    monkeypatch.setattr(tasks, "MAX_BATCHES_PER_JOB", 2)
    settings = dataclasses.replace(send_settings, send_batch_size=2)
    accept(conn, app_id, *[job() for _ in range(5)])
    conn.execute("DELETE FROM procrastinate_jobs")
    context = task_context(settings, pool, BULK)
    tasks.send_due_jobs(context)
    assert conn.execute("SELECT count(*) FROM jobs WHERE status = 'queued'").fetchone() == (1,)
    assert waiting(conn) == [(BULK, False)]


def test_due_email_is_all_sent_with_no_recovery_sweep_while_requests_and_senders_race(
    conn, app_id, database_url, pool, send_settings, simulator
):
    # Eight requesters, each a single-message insert in its own transaction; two senders that run every
    # wake-up they can fetch, as Procrastinate would (fetch, then the task). Nothing sweeps.
    context = task_context(send_settings, pool, TRANSACTIONAL)
    done = threading.Event()
    errors: list[BaseException] = []

    def requester() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                for _ in range(40):
                    accept(own, app_id, job())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def sender() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                while True:
                    taken = own.execute(
                        "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = ("
                        " SELECT id FROM procrastinate_jobs WHERE status = 'todo' AND task_name = %s"
                        " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id", (jobqueue.SEND_TASK,)
                    ).fetchone()
                    if taken is None:
                        if done.is_set():
                            return
                        time.sleep(0.001)
                        continue
                    tasks.send_due_jobs(context)
                    own.execute("DELETE FROM procrastinate_jobs WHERE id = %s", taken)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    senders = [threading.Thread(target=sender) for _ in range(2)]
    requesters = [threading.Thread(target=requester) for _ in range(8)]
    for thread in senders + requesters:
        thread.start()
    for thread in requesters:
        thread.join(60)
    done.set()
    for thread in senders:
        thread.join(60)
    assert errors == []
    assert conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall() == [("sent", 320)]
    assert waiting(conn) == []
