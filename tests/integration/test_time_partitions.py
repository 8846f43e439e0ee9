"""The time-keyed history in month partitions (migration 0029): where rows land, what stays unique across
months, and retention dropping whole months only when nothing in them is still to be done."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import pq

from mailer import db
from mailer.mailjet import events as mailjet_events
from mailer.services import retention, tracking
from mailer.store import jobs as jobs_store
from mailer.store import partitions as partitions_store
from mailer.store import retention as retention_store
from tests.integration.webhooks_support import expand, queue, set_status

UTC = dt.UTC
PARENTS = ("mailjet_events", "webhook_messages", "webhook_deliveries", "webhook_attempts", "webhook_fan_outs",
           "idempotency_keys")
WEBHOOK_PARENTS = PARENTS[1:5]
MESSAGE: dict[str, Any] = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}],
                           "subject": "Invoice", "text": "hi"}


def first_of(day: dt.date | dt.datetime) -> dt.date:
    return dt.date(day.year, day.month, 1)


def months_back(months: int, today: dt.date | None = None) -> dt.date:
    day = first_of(today or dt.datetime.now(UTC).date())
    total = day.year * 12 + day.month - 1 - months
    return dt.date(total // 12, total % 12 + 1, 1)


def partition(parent: str, month: dt.date) -> str:
    return f"{parent}_p{month:%Y%m}"


def exists(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]  # type: ignore[index]


def make_months(conn: psycopg.Connection, month: dt.date, parents: tuple[str, ...] = PARENTS) -> None:
    for parent in parents:
        conn.execute("SELECT mailer_ensure_month_partitions(%s, 'time', %s, %s)", (parent, month, month))


def old_message(conn: psycopg.Connection, app: int, endpoint: str, month: dt.date, status: str | None,
                fan_out: bool = False) -> str:
    """A webhook message of `month` with (when `status`) one delivery and its attempt."""
    created = dt.datetime(month.year, month.month, 15, tzinfo=UTC)
    message_id = f"msg_{month:%Y%m}_{status}_{fan_out}"
    conn.execute("INSERT INTO webhook_messages (id, app_id, type, body, created_at) "
                 "VALUES (%s, %s, 'email.sent', '{}', %s)", (message_id, app, created))
    if status:
        conn.execute("INSERT INTO webhook_deliveries (message_id, message_created_at, endpoint_id, status) "
                     "VALUES (%s, %s, %s, %s)", (message_id, created, endpoint, status))
        conn.execute("INSERT INTO webhook_attempts (delivery_id, message_created_at, attempted_at, latency_ms) "
                     "SELECT id, message_created_at, now(), 1 FROM webhook_deliveries WHERE message_id = %s",
                     (message_id,))
    if fan_out:
        conn.execute("INSERT INTO webhook_fan_outs (message_id, message_created_at) VALUES (%s, %s)",
                     (message_id, created))
    return message_id


def app_of(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT id FROM apps ORDER BY id LIMIT 1").fetchone()[0]  # type: ignore[index]


def test_every_parent_is_partitioned_by_month_with_months_ready_after_migrate(conn) -> None:
    this_month = first_of(dt.datetime.now(UTC))
    for parent in PARENTS:
        kind = conn.execute("SELECT kind FROM month_partitioned_tables WHERE parent = %s::regclass",
                            (parent,)).fetchone()
        assert kind == ("time",), parent
        strategy = conn.execute("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = %s::regclass",
                                (parent,)).fetchone()
        assert strategy == ("r",), parent
        for months in (1, 0, -1, -3):
            assert exists(conn, partition(parent, months_back(months, this_month))), (parent, months)


def add_endpoint(conn: psycopg.Connection) -> str:
    return str(conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret) VALUES (%s, 'http://127.0.0.1:9/h', '{*}', "
        "'whsec_x') RETURNING id", (app_of(conn),)).fetchone()[0])  # type: ignore[index]


def test_a_webhook_message_and_everything_it_fans_out_to_share_its_month(client, auth, conn) -> None:
    add_endpoint(conn)
    job = queue(client, auth, "ann@example.org")
    set_status(conn, job, "delivered")
    assert expand(conn) == 1
    rows = conn.execute(
        """SELECT m.tableoid::regclass::text, m.created_at, d.tableoid::regclass::text, d.message_created_at
           FROM webhook_messages m JOIN webhook_deliveries d ON d.message_id = m.id""").fetchall()
    month = first_of(dt.datetime.now(UTC))
    assert rows == [(partition("webhook_messages", month), rows[0][1], partition("webhook_deliveries", month),
                     rows[0][1])]


def test_an_event_lands_in_the_month_of_its_own_time(conn) -> None:
    now = dt.datetime.now(UTC)
    last_month_day = dt.datetime.combine(months_back(1), dt.time(12), UTC)
    at = max(last_month_day, now - dt.timedelta(days=20))
    raw = {"event": "open", "time": int(at.timestamp()), "MessageID": 77}
    tracking.record_events(conn, [mailjet_events.to_event(raw, now)])
    where = conn.execute("SELECT tableoid::regclass::text, occurred_at FROM mailjet_events").fetchone()
    assert where == (partition("mailjet_events", first_of(at)), dt.datetime.fromtimestamp(raw["time"], UTC))


def test_mailjets_retry_in_the_next_month_is_kept_once(conn) -> None:
    """The fingerprint hashes the raw event with its time, and the time is the partition key: the retry meets
    the first copy's unique key in the same partition, whatever month it arrives in."""
    start = dt.datetime.combine(first_of(dt.datetime.now(UTC)), dt.time(), UTC)
    raw = {"event": "open", "time": int(start.timestamp()) - 600, "MessageID": 78, "email": "a@example.org"}
    first = tracking.record_events(conn, [mailjet_events.to_event(raw, start - dt.timedelta(minutes=5))])
    again = tracking.record_events(conn, [mailjet_events.to_event(raw, start + dt.timedelta(hours=20))])
    assert (first.new, again.new) == (1, 0)
    rows = conn.execute("SELECT tableoid::regclass::text FROM mailjet_events").fetchall()
    assert rows == [(partition("mailjet_events", months_back(1)),)]


# --- Idempotency-Key across months ----------------------------------------------------------------------


def post(client, auth, key: str, message: dict[str, Any] = MESSAGE):  # type: ignore[no-untyped-def]
    return client.post("/queue", json=message, headers={**auth, "Idempotency-Key": key})


def test_a_key_stored_last_month_is_honoured_this_month_also_against_a_concurrent_repeat(
        client, auth, conn, database_url) -> None:
    first = post(client, auth, "order-1")
    assert first.status_code == 202
    # the first request was answered in the last second of last month
    conn.execute("UPDATE idempotency_keys SET created_at = date_trunc('month', now()) - interval '1 second'")
    where = conn.execute("SELECT tableoid::regclass::text FROM idempotency_keys").fetchall()
    assert where == [(partition("idempotency_keys", months_back(1)),)]

    # a repeat while another request holds the key (another web process, this month): 409, nothing stored
    with psycopg.connect(database_url) as other, other.transaction():
        assert jobs_store.lock_idempotency_key(other, app_id=app_of(conn), key="order-1")
        assert post(client, auth, "order-1").status_code == 409
    repeat = post(client, auth, "order-1")
    assert (repeat.status_code, repeat.json) == (202, first.json)
    assert post(client, auth, "order-1", {**MESSAGE, "subject": "other"}).status_code == 422
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (1,)


def test_a_key_older_than_the_window_is_a_new_request(client, auth, conn, settings) -> None:
    first = post(client, auth, "order-2")
    old = dt.datetime.now(UTC) - dt.timedelta(days=settings.retention_days + 1)
    make_months(conn, first_of(old), ("idempotency_keys",))
    conn.execute("UPDATE idempotency_keys SET created_at = %s", (old,))
    again = post(client, auth, "order-2")
    assert again.status_code == 202
    assert again.json["id"] != first.json["id"]
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (2,)


# --- retention: whole months ----------------------------------------------------------------------------


@pytest.fixture
def endpoint(conn, api_key) -> str:
    return add_endpoint(conn)


def test_months_past_the_horizon_are_dropped_whole_and_newer_ones_stay(conn, settings, endpoint) -> None:
    now = dt.datetime.now(UTC)
    expired, kept = months_back(13), months_back(11)  # 365 days: 13 months back ended long enough ago
    for month in (expired, kept):
        make_months(conn, month)
        old_message(conn, app_of(conn), endpoint, month, "succeeded")
        at = dt.datetime(month.year, month.month, 2, tzinfo=UTC)
        conn.execute("INSERT INTO mailjet_events (fingerprint, name, occurred_at, payload, received_at) "
                     "VALUES (%s, 'open', %s, '{}', %s)", (f"f{month}", at, at))
        conn.execute("INSERT INTO idempotency_keys (app_id, key, request_hash, response_status, response_body, "
                     "created_at) VALUES (%s, %s, 'h', 202, '{}', %s)", (app_of(conn), f"k{month}", at))

    dropped = retention.drop_expired_partitions(conn, settings, now)

    assert dropped == len(PARENTS)
    for parent in PARENTS:
        assert not exists(conn, partition(parent, expired)), parent
        assert exists(conn, partition(parent, kept)), parent
    for parent in PARENTS:  # whole months went, no row was deleted from what stays (the fan-out was done)
        left = 0 if parent == "webhook_fan_outs" else 1
        assert conn.execute(f"SELECT count(*) FROM {parent}").fetchone() == (left,), parent  # noqa: S608  # fixed names
    assert retention.drop_expired_partitions(conn, settings, now) == 0


def test_a_month_with_a_pending_delivery_or_a_waiting_fan_out_is_kept(conn, settings, endpoint) -> None:
    now = dt.datetime.now(UTC)
    pending, fanning = months_back(14), months_back(15)
    for month in (pending, fanning):
        make_months(conn, month, WEBHOOK_PARENTS)
    old_message(conn, app_of(conn), endpoint, pending, "pending")
    old_message(conn, app_of(conn), endpoint, fanning, None, fan_out=True)

    assert retention.drop_expired_partitions(conn, settings, now) == 0
    for month in (pending, fanning):
        assert all(exists(conn, partition(parent, month)) for parent in WEBHOOK_PARENTS)

    conn.execute("UPDATE webhook_deliveries SET status = 'succeeded'")
    conn.execute("DELETE FROM webhook_fan_outs")
    assert retention.drop_expired_partitions(conn, settings, now) == 2 * len(WEBHOOK_PARENTS)
    for month in (pending, fanning):
        assert not any(exists(conn, partition(parent, month)) for parent in WEBHOOK_PARENTS)


def test_events_of_last_month_stay_even_with_a_short_horizon(conn, settings) -> None:
    """A new event may still carry a time in the month before (events.PLAUSIBLE_PAST): that month stays."""
    short = dataclasses.replace(settings, retention_days=1, retention_body_days=1)
    now = dt.datetime.combine(first_of(dt.datetime.now(UTC)), dt.time(), UTC) + dt.timedelta(days=2)
    retention.drop_expired_partitions(conn, short, now)
    assert exists(conn, partition("mailjet_events", months_back(1)))
    assert not exists(conn, partition("idempotency_keys", months_back(1)))


def test_a_pending_delivery_of_an_old_month_is_still_claimed(conn, endpoint) -> None:
    """The claim reads only from the oldest month holding a pending delivery on: a replayed one counts too."""
    old = months_back(5)
    make_months(conn, old, WEBHOOK_PARENTS)
    message_id = old_message(conn, app_of(conn), endpoint, old, "pending")
    conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'")
    claimed = conn.execute("SELECT message_id FROM webhook_claim_deliveries(10, 4, 16, 60)").fetchall()
    assert claimed == [(message_id,)]
    assert conn.execute("SELECT count(*) FROM webhook_claim_deliveries(10, 4, 16, 60)").fetchone() == (0,)  # leased


def test_a_busy_parent_makes_retention_wait_for_its_next_run(conn, settings, database_url, endpoint) -> None:
    expired = months_back(14)
    make_months(conn, expired)
    quick = dataclasses.replace(settings, partition_lock_timeout_ms=50)
    with psycopg.connect(database_url) as reader, reader.transaction():
        reader.execute("SELECT count(*) FROM webhook_messages")  # a long reader holds its lock on the parent
        reader.execute("SELECT count(*) FROM idempotency_keys")
        dropped = retention.drop_expired_partitions(conn, quick, dt.datetime.now(UTC))
        assert exists(conn, partition("webhook_messages", expired))
        assert exists(conn, partition("idempotency_keys", expired))
    assert dropped == 1  # mailjet_events' month, taken before the busy parents
    assert retention.drop_expired_partitions(conn, quick, dt.datetime.now(UTC)) == len(PARENTS) - 1


def test_each_month_is_dropped_in_a_transaction_of_its_own(conn, settings, endpoint, monkeypatch) -> None:
    """Review finding 4: on a pooled connection (it opens a transaction at the first statement), no read of the
    months may leave one open, or every drop would be a savepoint and all their locks held to the end."""
    expired = months_back(14)
    make_months(conn, expired)
    seen: list[tuple[str, pq.TransactionStatus]] = []

    def spy(real: Any) -> Any:
        def call(conn_: psycopg.Connection, *args: Any, **kwargs: Any) -> Any:
            seen.append((real.__name__, conn_.info.transaction_status))
            return real(conn_, *args, **kwargs)
        return call

    monkeypatch.setattr(partitions_store, "drop_month_partition", spy(partitions_store.drop_month_partition))
    monkeypatch.setattr(retention_store, "drop_webhook_month", spy(retention_store.drop_webhook_month))
    pool = db.create_pool(settings, name="test")
    try:
        pool.wait()
        with pool.connection() as pooled:
            assert retention.drop_expired_partitions(pooled, settings, dt.datetime.now(UTC)) == len(PARENTS)
            status = pooled.info.transaction_status
    finally:
        pool.close()
    assert {name for name, _ in seen} == {"drop_month_partition", "drop_webhook_month"}
    assert all(before == pq.TransactionStatus.IDLE for _, before in seen), seen
    assert status == pq.TransactionStatus.IDLE


def test_an_event_without_a_usable_time_is_kept_once_across_months(conn) -> None:
    """Stamped with its arrival, its copies differ in occurred_at: the lookup by fingerprint finds the first."""
    start = dt.datetime.combine(first_of(dt.datetime.now(UTC)), dt.time(), UTC)
    raw = {"event": "open", "time": "soon", "MessageID": 79}
    first = tracking.record_events(conn, [mailjet_events.to_event(raw, start - dt.timedelta(hours=1))])
    again = tracking.record_events(conn, [mailjet_events.to_event(raw, start + dt.timedelta(hours=5))])
    assert (first.new, again.new) == (1, 0)
    assert conn.execute("SELECT occurred_at FROM mailjet_events").fetchall() == [(start - dt.timedelta(hours=1),)]


def test_two_concurrent_copies_of_an_undated_event_are_kept_once(conn, database_url) -> None:
    """Review finding 6: the second copy waits for the first's transaction, then finds it."""
    start = dt.datetime.now(UTC)
    raw = {"event": "open", "time": "soon", "MessageID": 81}
    results: list[int] = []
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        assert tracking.record_events(first, [mailjet_events.to_event(raw, start)]).new == 1  # not committed yet

        def deliver_again() -> None:
            results.append(tracking.record_events(second, [mailjet_events.to_event(
                raw, start + dt.timedelta(seconds=3))]).new)
            second.commit()

        copy = threading.Thread(target=deliver_again)
        copy.start()
        deadline = time.monotonic() + 10
        while copy.is_alive() and time.monotonic() < deadline:  # until it waits for the first's lock, or is done
            waiting = conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                                   (second.info.backend_pid,)).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.02)
        first.commit()
        copy.join(timeout=10)
        assert not copy.is_alive()
    assert results == [0]
    assert conn.execute("SELECT count(*) FROM mailjet_events WHERE message_id = 81").fetchone() == (1,)
