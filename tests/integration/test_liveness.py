"""Claims tied to their sender's liveness: the takeover rules, reconnecting, the gate, the fence on late results."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import requests
from prometheus_client import REGISTRY

from mailer import config, db, store
from mailer.domain import errors
from mailer.services import liveness, rate_limits, recovery, send_recording, send_results, sending
from mailer.store import senders as senders_store
from mailer.store.queries import query
from tests.integration.sending_support import message, run_sender, sends


@pytest.fixture
def other(database_url: str) -> Iterator[psycopg.Connection]:
    """The liveness connection of another worker process."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def queue(client, auth, count: int = 3) -> list[str]:  # type: ignore[no-untyped-def]
    messages = [message(f"r{i}@example.org") for i in range(count)]
    return [job["id"] for job in client.post("/queue", json={"messages": messages}, headers=auth).json["jobs"]]


def seen_ago(conn: psycopg.Connection, sender_id: int, seconds: float) -> None:
    # The grace counts from the server's start at the earliest: wait for it with a server started just now.
    while conn.execute("SELECT now() - pg_postmaster_start_time() < make_interval(secs => %s)",
                       [min(seconds, 10)]).fetchone()[0]:
        time.sleep(0.2)
    conn.execute("UPDATE senders SET seen_at = now() - make_interval(secs => %s) WHERE id = %s", [seconds, sender_id])


def jobs(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT status, verify_before_send, claimed_by FROM jobs ORDER BY id").fetchall()


def last_event(conn: psycopg.Connection, job_id: str) -> tuple:
    return conn.execute(
        "SELECT type, detail->>'rule' FROM job_events WHERE job_id = %s ORDER BY id DESC LIMIT 1", [job_id]
    ).fetchone()


def lock_holder(conn: psycopg.Connection, sender_id: int) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
        " AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
        [senders_store.SENDER_LOCK_NAMESPACE, sender_id],
    ).fetchone()
    return None if row is None else row[0]


# --- the takeover rules ---


def test_a_dead_sender_is_taken_over_after_the_grace_and_not_before(client, auth, settings, conn, other) -> None:
    ids = queue(client, auth)
    dead = senders_store.register_sender(other, host="h", os_pid=1)
    store.claim_due_jobs(conn, limit=50, sender_id=dead)
    other.close()  # kill -9: the server ends the session, and its lock goes

    assert recovery.take_over(conn, settings).jobs == 0  # just seen: it may be reconnecting
    seen_ago(conn, dead, settings.send_reconnect_grace_s - 1.5)
    assert recovery.take_over(conn, settings).jobs == 0
    seen_ago(conn, dead, settings.send_reconnect_grace_s + 0.5)

    took = recovery.take_over(conn, settings)

    assert took == recovery.TakenOver(retired={"dead": 1}, jobs=3, deleted=1)
    assert jobs(conn) == [("queued", True, dead)] * 3
    assert {last_event(conn, job_id) for job_id in ids} == {("recovered", "dead")}
    assert conn.execute("SELECT count(*) FROM senders WHERE id = %s", [dead]).fetchone() == (0,)
    assert recovery.take_over(conn, settings) == recovery.TakenOver(retired={}, jobs=0, deleted=0)


def test_a_live_sender_is_never_taken_over_however_old_its_claim(client, auth, settings, conn, other) -> None:
    queue(client, auth)
    live = senders_store.register_sender(other, host="h", os_pid=1)
    store.claim_due_jobs(conn, limit=50, sender_id=live)
    conn.execute("UPDATE jobs SET claimed_at = now() - interval '1 day'")
    seen_ago(conn, live, settings.send_lease_s - 5)  # a long pause, but shorter than the lease

    assert recovery.take_over(conn, settings).jobs == 0
    assert recovery.sweep(conn, settings).stalled == 0  # the legacy rule is for claims without a sender
    assert jobs(conn) == [("sending", False, live)] * 3


def test_a_hung_sender_is_taken_over_after_the_lease_and_its_session_ended(
    client, auth, settings, conn, other
) -> None:
    ids = queue(client, auth)
    hung = senders_store.register_sender(other, host="h", os_pid=1)
    store.claim_due_jobs(conn, limit=50, sender_id=hung)
    seen_ago(conn, hung, settings.send_lease_s + 1)

    took = recovery.take_over(conn, settings)

    assert took.retired == {"hung": 1} and took.jobs == 3
    assert jobs(conn) == [("queued", True, hung)] * 3
    assert {last_event(conn, job_id) for job_id in ids} == {("recovered", "hung")}
    deadline = time.monotonic() + 5
    while lock_holder(conn, hung) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock_holder(conn, hung) is None  # its liveness backend was terminated
    with pytest.raises(psycopg.OperationalError):
        other.execute("SELECT 1")


def test_the_grace_counts_from_the_database_start() -> None:
    # A restart drops every lock; the workers take theirs back within the grace, counted from the restart.
    # Restarting the test cluster under the other tests is not an option: the rule is checked in its SQL.
    assert "greatest(seen_at, pg_postmaster_start_time())" in query("retire_lost_senders")


def test_a_claim_made_before_sender_liveness_is_recovered_by_age(client, auth, settings, conn) -> None:
    (job_id,) = queue(client, auth, 1)
    store.claim_due_jobs(conn, limit=50)  # no sender: as a worker of the previous release claimed
    assert recovery.sweep(conn, settings).stalled == 0
    conn.execute("UPDATE jobs SET claimed_at = now() - make_interval(secs => %s)", [settings.send_stalled_after_s + 1])

    assert recovery.sweep(conn, settings).stalled == 1
    assert jobs(conn) == [("queued", True, None)]
    assert last_event(conn, job_id) == ("recovered", "legacy")


def test_a_sender_is_not_retired_under_a_claim_in_progress(client, auth, settings, conn, other) -> None:
    # The claim holds its sender's row (FOR KEY SHARE) until it commits; the takeover skips rows it cannot
    # lock, so no claim can commit jobs in the name of a sender already retired (and deleted).
    queue(client, auth, 2)
    sender = senders_store.register_sender(other, host="h", os_pid=1)
    other.close()
    seen_ago(conn, sender, settings.send_reconnect_grace_s + 1)
    with psycopg.connect(settings.database_url) as claiming:  # one transaction, committed at the end
        assert senders_store.hold_sender(claiming, sender_id=sender)
        store.claim_due_jobs(claiming, limit=50, sender_id=sender)
        assert recovery.take_over(conn, settings).retired == {}

    assert recovery.take_over(conn, settings) == recovery.TakenOver(retired={"dead": 1}, jobs=2, deleted=1)


# --- the liveness connection ---


def backend_of(conn: psycopg.Connection, sender_id: int) -> int:
    return conn.execute("SELECT backend_pid FROM senders WHERE id = %s", [sender_id]).fetchone()[0]


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_lost_liveness_connection_comes_back_with_the_same_sender(settings, conn) -> None:
    with liveness.running(settings) as sender:
        first = sender.sender_id
        assert first is not None and sender.healthy(first)
        old_backend = backend_of(conn, first)
        conn.execute("SELECT pg_terminate_backend(%s)", [old_backend])

        wait_for(lambda: backend_of(conn, first) != old_backend and sender.healthy(first))

        assert sender.sender_id == first
        assert lock_holder(conn, first) == backend_of(conn, first)


def test_a_sender_taken_over_while_away_comes_back_as_a_new_one(settings, conn) -> None:
    with liveness.running(settings) as sender:
        first = sender.sender_id
        assert first is not None
        conn.execute("UPDATE senders SET retired_at = now(), retired_because = 'dead' WHERE id = %s", [first])
        conn.execute("SELECT pg_terminate_backend(%s)", [backend_of(conn, first)])

        wait_for(lambda: sender.sender_id not in (None, first))

        assert not sender.healthy(first)
        assert lock_holder(conn, first) is None  # not kept: its claims belong to the takeover now
        new = sender.sender_id
        assert new is not None and sender.healthy(new) and lock_holder(conn, new) == backend_of(conn, new)


def test_a_retired_sender_notices_at_its_next_heartbeat(settings, conn) -> None:
    with liveness.running(settings) as sender:
        first = sender.sender_id
        assert first is not None
        conn.execute("UPDATE senders SET retired_at = now(), retired_because = 'hung' WHERE id = %s", [first])
        wait_for(lambda: not sender.healthy(first), timeout=liveness.HEARTBEAT_S + 2)
        wait_for(lambda: sender.sender_id not in (None, first))


# --- the gate ---


def test_no_mailjet_call_starts_once_the_claims_sender_is_gone(client, auth, send_settings, simulator, conn) -> None:
    # One call per two seconds for all workers, and the token already taken: the call waits ~2 s for the cap.
    settings = dataclasses.replace(send_settings, mailjet_max_calls_per_s=0.5)
    ids = queue(client, auth, 3)
    rate_limits.take(conn, rate_limits.MAILJET_KEY, 0.5, 1.0)
    sender = liveness.current()
    first = sender.sender_id

    def retire_soon() -> None:
        time.sleep(0.5)
        conn.execute("UPDATE senders SET retired_at = now(), retired_because = 'dead' WHERE id = %s", [first])

    retirer = threading.Thread(target=retire_soon)
    retirer.start()
    outcome = run_sender(settings)
    retirer.join()

    assert outcome.claimed == 3 and outcome.released == 3 and outcome.sent == 0
    assert sends(simulator)["calls"] == 0
    assert {last_event(conn, job_id)[0] for job_id in ids} == {"released"}


def test_a_sender_without_a_live_identity_claims_nothing(client, auth, send_settings, conn) -> None:
    queue(client, auth, 1)
    down = liveness.Liveness(dataclasses.replace(send_settings, database_url="postgresql://127.0.0.1:9/none"))
    with pytest.raises(liveness.SenderUnavailable):
        sending.send_due_batch(_pool(send_settings), None, send_settings, sender=down)  # type: ignore[arg-type]
    assert jobs(conn) == [("queued", False, None)]


def _pool(settings):  # type: ignore[no-untyped-def]
    return db.create_pool(settings, name="test-gate")


# --- the fence: a late result of a claim taken over changes nothing ---


def take_over_and_reclaim(conn: psycopg.Connection, settings, claimed_by: int) -> int:  # type: ignore[no-untyped-def]
    """Take `claimed_by` over as dead, and let another sender claim its jobs again; that sender's id."""
    conn.execute("UPDATE senders SET retired_at = now(), retired_because = 'dead' WHERE id = %s", [claimed_by])
    assert recovery.take_over(conn, settings).jobs > 0
    with psycopg.connect(settings.database_url, autocommit=True) as second:
        again = senders_store.register_sender(second, host="h2", os_pid=2)
        assert store.claim_due_jobs(conn, limit=50, sender_id=again).jobs
    return again


def snapshot(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT j.id, j.status, j.attempts, j.claimed_by, j.last_error, j.verify_before_send,"
        " (SELECT count(*) FROM job_events e WHERE e.job_id = j.id),"
        " (SELECT array_agg(r.status ORDER BY r.id) FROM recipients r WHERE r.job_id = j.id)"
        " FROM jobs j ORDER BY j.id"
    ).fetchall()


@pytest.mark.parametrize("result", ["sent", "failed", "retry", "released"])
def test_a_late_result_of_a_claim_taken_over_changes_nothing(client, auth, settings, conn, result) -> None:
    queue(client, auth, 2)
    first = liveness.current().sender_id
    assert first is not None
    claim = store.claim_due_jobs(conn, limit=50, sender_id=first)
    again = take_over_and_reclaim(conn, settings, first)
    before = snapshot(conn)
    assert {row[1:4] for row in before} == {("sending", 2, again)}
    late_before = REGISTRY.get_sample_value("mailer_send_late_results_total") or 0

    results = send_results.Results(sender_id=first)
    if result == "sent":
        results.accepted = [(job, None) for job in claim.jobs]
    elif result == "failed":
        results.rejected = [(job, "mj-0013: invalid") for job in claim.jobs]
    elif result == "retry":
        results.retry = [(job, "Mailjet 500", True, None) for job in claim.jobs]
    else:
        results.unsent = list(claim.jobs)
    with psycopg.connect(settings.database_url) as recording:
        outcome = send_recording.record(recording, settings, results, None, False)

    assert snapshot(conn) == before
    assert (outcome.sent, outcome.failed, outcome.retried, outcome.released) == (0, 0, 0, 0)
    assert REGISTRY.get_sample_value("mailer_send_late_results_total") == late_before + 2


def test_a_claims_own_result_is_recorded_through_the_fence(client, auth, send_settings, simulator, conn) -> None:
    queue(client, auth, 2)
    assert run_sender(send_settings).sent == 2
    assert [row[0] for row in jobs(conn)] == ["sent", "sent"]


def test_a_result_that_comes_back_after_a_takeover_during_the_call_is_dropped(
    client, auth, send_settings, simulator, conn
) -> None:
    ids = queue(client, auth, 2)
    requests.post(f"{simulator}/_sim/config", json={"latency_s": 1.5}, timeout=5).raise_for_status()
    first = liveness.current().sender_id
    outcome: list[send_results.BatchOutcome] = []
    sender = threading.Thread(target=lambda: outcome.append(run_sender(send_settings)))
    sender.start()
    wait_for(lambda: conn.execute("SELECT count(*) FROM jobs WHERE status = 'sending'").fetchone() == (2,))
    assert first is not None
    again = take_over_and_reclaim(conn, send_settings, first)
    sender.join()

    assert outcome[0].sent == 0  # Mailjet took them, but the jobs belong to the second claim now
    assert jobs(conn) == [("sending", True, again)] * 2
    assert {last_event(conn, job_id)[0] for job_id in ids} == {"sending"}


# --- each status change of a sending job leaves a job no longer sending alone ---


@pytest.mark.parametrize("statement", ["failed", "sent", "requeued", "released"])
def test_a_job_no_longer_sending_is_left_alone_by_every_result(client, auth, settings, conn, statement) -> None:
    (job_id,) = queue(client, auth, 1)
    store.claim_due_jobs(conn, limit=50)
    conn.execute("UPDATE jobs SET claimed_at = now() - interval '1 day'")
    assert recovery.sweep(conn, settings).stalled == 1  # taken over: queued, to be checked first
    before = snapshot(conn)

    if statement == "failed":
        changed = store.mark_jobs_failed(conn, failures=[{"id": job_id, "error": "late"}])
    elif statement == "sent":
        changed = store.mark_jobs_sent(conn, ids=[job_id])
    elif statement == "requeued":
        changed = list(store.requeue_jobs(conn, retries=[{"id": job_id, "error": "late", "delay_s": 60,
                                                          "ambiguous": False}]))
    else:
        changed = list(store.release_jobs(conn, ids=[job_id]))

    assert changed == [] and snapshot(conn) == before


def test_a_claim_that_cannot_be_recorded_gives_up_its_sender_so_it_is_taken_over(
    client, auth, send_settings, simulator, conn, monkeypatch
) -> None:
    # A live sender is never taken over: jobs left `sending` by a claim whose results could not be recorded
    # (the database away at that moment) would wait forever if the sender kept its identity.
    queue(client, auth, 2)
    sender = liveness.current()
    first = sender.sender_id
    assert first is not None

    def database_gone(*args: object) -> None:
        raise psycopg.OperationalError("the database is away")

    monkeypatch.setattr(send_recording, "record", database_gone)
    with pytest.raises(errors.DatabaseUnavailable):
        run_sender(send_settings)
    monkeypatch.undo()

    assert not sender.healthy(first)
    wait_for(lambda: lock_holder(conn, first) is None and sender.sender_id not in (None, first))
    seen_ago(conn, first, send_settings.send_reconnect_grace_s + 1)
    assert recovery.take_over(conn, send_settings).jobs == 2
    assert jobs(conn) == [("queued", True, first)] * 2


def test_a_sender_given_up_keeps_its_session_while_another_of_its_claims_is_in_flight(settings, conn) -> None:
    # That claim's Mailjet call may still be under way: were the lock gone, the takeover could ask Mailjet
    # before Mailjet has it, and send it again.
    with liveness.running(settings) as sender:
        first = sender.sender_id
        assert first is not None
        with sender.in_flight(first):
            sender.abandon(first)
            assert not sender.healthy(first)  # it starts no call and claims nothing more
            time.sleep(liveness.HEARTBEAT_S * 3)
            assert lock_holder(conn, first) is not None
        wait_for(lambda: lock_holder(conn, first) is None and sender.sender_id not in (None, first))


# --- issue 18 review: a lost commit, a hung claim, a restart, a vanished machine, a paused takeover ---


def test_a_claim_whose_commit_is_lost_on_the_way_back_gives_up_its_sender(
    client, auth, send_settings, simulator, conn, monkeypatch
) -> None:
    # The COMMIT lands on the server, the answer never comes back: the jobs are `sending` in the name of a sender
    # that is alive, which is never taken over, unless it gives its identity up.
    queue(client, auth, 2)
    sender = liveness.current()
    first = sender.sender_id
    assert first is not None
    real = db.connection

    @contextlib.contextmanager
    def commit_then_lose(pool, timeout=None):  # type: ignore[no-untyped-def]
        with real(pool, timeout) as connection:
            yield connection
        raise errors.DatabaseUnavailable("the connection was lost at COMMIT")

    monkeypatch.setattr(sending.db, "connection", commit_then_lose)
    with pytest.raises(errors.DatabaseUnavailable):
        run_sender(send_settings)
    monkeypatch.undo()

    assert jobs(conn) == [("sending", False, first)] * 2  # the claim did commit
    assert not sender.healthy(first)
    wait_for(lambda: lock_holder(conn, first) is None and sender.sender_id not in (None, first))
    seen_ago(conn, first, send_settings.send_reconnect_grace_s + 1)
    assert recovery.take_over(conn, send_settings).jobs == 2


def test_a_claim_that_meets_a_job_cancelled_meanwhile_keeps_its_sender(
    client, auth, send_settings, simulator, conn, monkeypatch
) -> None:
    # Review finding 3: the claim's scan sees a queued job, a cancel commits and moves it to jobs_done, then the
    # claim locks it: PostgreSQL raises 40001. Nothing of the claim committed: no reason to give the sender up.
    ids = queue(client, auth, 2)
    sender = liveness.current()
    first = sender.sender_id
    assert first is not None
    real = sending.store.claim_due_jobs

    def cancelled_under_the_scan(claim_conn: psycopg.Connection, **kwargs: object) -> object:
        monkeypatch.setattr(sending.store, "claim_due_jobs", real)
        claim_conn.execute("DECLARE scan CURSOR FOR SELECT id FROM jobs WHERE id = %s FOR UPDATE SKIP LOCKED",
                           [ids[0]])
        conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", [ids[0]])
        claim_conn.execute("FETCH scan")  # locks the version the scan saw: moved to another partition
        return real(claim_conn, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sending.store, "claim_due_jobs", cancelled_under_the_scan)
    outcome = run_sender(send_settings)

    assert outcome.more and outcome.claimed == 0  # the caller claims again at once
    assert sender.healthy(first) and sender.sender_id == first
    assert run_sender(send_settings).sent == 1
    assert sender.sender_id == first


def test_a_claim_that_hangs_past_its_bound_stops_the_lease_so_the_hung_rule_applies(
    settings, conn, monkeypatch
) -> None:
    # The heartbeat is process-wide: were it renewed under a claim that never ends, that claim's jobs would never
    # be taken over. Bound here: call window 1 s + Mailjet timeout 1 s + no margin.
    monkeypatch.setattr(config, "CLAIM_MARGIN_S", 0.0)
    short = dataclasses.replace(settings, send_call_window_s=1.0, mailjet_timeout_s=1.0)
    before = metric("mailer_sender_claim_overdue_total")
    with liveness.running(short) as sender:
        first = sender.sender_id
        assert first is not None
        with sender.in_flight(first):
            time.sleep(1.0)
            assert sender.healthy(first)  # a claim within its bound: the lease is renewed
            time.sleep(short.send_claim_bound_s + liveness.HEARTBEAT_S)
            seen = conn.execute("SELECT seen_at FROM senders WHERE id = %s", [first]).fetchone()
            time.sleep(liveness.HEARTBEAT_S * 3)
            assert conn.execute("SELECT seen_at FROM senders WHERE id = %s", [first]).fetchone() == seen
            assert metric("mailer_sender_claim_overdue_total") == before + 1  # once, not every heartbeat
            seen_ago(conn, first, short.send_lease_s + 1)
            assert recovery.take_over(conn, short).retired == {"hung": 1}
            wait_for(lambda: sender.sender_id not in (None, first))  # its session ended; it registers anew


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_no_takeover_runs_before_the_liveness_connection_has_been_up_for_the_grace(settings, conn, other) -> None:
    # After a crash or a failover every worker reconnects at once: none may judge the others dead before they
    # have had a whole grace to take their locks back.
    dead = senders_store.register_sender(other, host="h", os_pid=1)
    other.close()
    seen_ago(conn, dead, settings.send_reconnect_grace_s + 60)
    pool = _pool(settings)
    try:
        with liveness.running(settings, pool) as sender:
            assert sender.reachable_for() < settings.send_reconnect_grace_s
            time.sleep(settings.send_reconnect_grace_s / 2)
            assert conn.execute("SELECT retired_at FROM senders WHERE id = %s", [dead]).fetchone() in ((None,), None)
            assert conn.execute("SELECT count(*) FROM senders WHERE id = %s", [dead]).fetchone() == (1,)
            wait_for(lambda: conn.execute("SELECT count(*) FROM senders WHERE id = %s", [dead]).fetchone() == (0,),
                     timeout=settings.send_reconnect_grace_s + liveness.TAKEOVER_EVERY_S + 5)
            assert sender.reachable_for() >= settings.send_reconnect_grace_s
    finally:
        pool.close()


def test_the_liveness_session_sets_the_servers_keepalives_and_a_statement_timeout(settings) -> None:
    with liveness.running(settings) as sender:
        connection = sender._conn
        assert connection is not None
        shown = {name: connection.execute(f"SHOW {name}").fetchone()[0] for name in (
            "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout",
            "statement_timeout")}
    assert shown == {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
                     "tcp_user_timeout": "10000", "statement_timeout": f"{int(settings.db_timeout_s)}s"}


def test_a_quiet_live_senders_row_is_not_locked_by_a_takeover(settings, conn, other, database_url) -> None:
    # Its heartbeat must never wait on another worker's takeover (paused, say, mid-transaction).
    live = senders_store.register_sender(other, host="h", os_pid=1)
    seen_ago(conn, live, settings.send_reconnect_grace_s + 5)  # quiet, but its lock is held: neither rule
    with psycopg.connect(database_url) as taker, psycopg.connect(database_url, autocommit=True) as third:
        assert recovery.take_over(taker, settings).retired == {}  # the transaction stays open
        third.execute("SET lock_timeout = '1s'")
        assert third.execute("SELECT id FROM senders WHERE id = %s FOR UPDATE NOWAIT", [live]).fetchone() == (live,)
        taker.rollback()


def test_a_takeover_that_cannot_lock_a_job_gives_up_within_its_lock_timeout(
    client, auth, settings, conn, other, database_url
) -> None:
    # A claim's fence holds the job (or a paused worker does): the takeover fails this round, and tries again at
    # the next, rather than waiting with sender rows locked.
    queue(client, auth, 2)
    dead = senders_store.register_sender(other, host="h", os_pid=1)
    store.claim_due_jobs(conn, limit=50, sender_id=dead)
    other.close()
    seen_ago(conn, dead, settings.send_reconnect_grace_s + 1)
    with psycopg.connect(database_url) as fence, psycopg.connect(database_url) as taker:
        fence.execute("SELECT id FROM jobs ORDER BY id DESC LIMIT 1 FOR UPDATE")
        outcome: list[object] = []

        def run() -> None:
            try:
                outcome.append(recovery.take_over(taker, settings))
            except psycopg.Error as exc:
                outcome.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(timeout=recovery.TAKEOVER_LOCK_MS / 1000 + 8)
        fence.rollback()
        thread.join(timeout=10)
        assert len(outcome) == 1 and isinstance(outcome[0], psycopg.errors.LockNotAvailable), outcome
        assert time.monotonic() - started < recovery.TAKEOVER_LOCK_MS / 1000 + 8
        taker.rollback()
    assert jobs(conn) == [("sending", False, dead)] * 2  # nothing half done; the next round takes them
    assert recovery.take_over(conn, settings).jobs == 2


def test_terminating_a_senders_backend_spares_any_other_holder_of_its_lock(conn, other) -> None:
    # The lock may have changed hands since the stale backend was found (another worker's takeover holds it
    # for its transaction): only the backend found is ended.
    held = senders_store.register_sender(other, host="h", os_pid=1)
    holder = lock_holder(conn, held)
    assert holder is not None
    assert senders_store.terminate_sender_backend(conn, sender_id=held, pid=holder + 100_000) == []
    other.execute("SELECT 1")  # still alive
    assert senders_store.terminate_sender_backend(conn, sender_id=held, pid=holder) == [holder]


def test_the_takeover_locks_the_jobs_it_requeues_in_id_order_as_a_fence_does(conn) -> None:
    # Locked in any other order (the scan's), a takeover and a fence holding two of the same jobs could deadlock.
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + query("take_over_lost_claims")).fetchone()[0][0]["Plan"]  # type: ignore[operator]

    def nodes(node: dict) -> Iterator[dict]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    lock_rows = [node for node in nodes(plan) if node["Node Type"] == "LockRows"]
    assert lock_rows, "the jobs are not locked before the update"
    sorts = [node for node in nodes(lock_rows[0]) if node["Node Type"] == "Sort"]
    assert sorts and sorts[0]["Sort Key"] == ["jobs.id"]
