"""Rate limits in Postgres: the token bucket query, the per-app request limit (429), the Mailjet cap."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import psycopg
import pytest

from mailer import db, pgcluster
from mailer.config import Settings
from mailer.mailjet import send as mailjet
from mailer.services import rate_limits, send_results, sending
from tests.integration.conftest import app_with, make_key


def message(to: str = "ann@example.org") -> dict:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": to}], "subject": "Invoice", "text": "hi"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608  # fixed table names
    assert row is not None
    return int(row[0])


# --- the bucket ---------------------------------------------------------------------------------


def test_a_bucket_grants_its_burst_then_refuses_with_the_wait_for_one_token(conn) -> None:
    decisions = [rate_limits.take(conn, "k", rate_per_s=20, burst=3) for _ in range(4)]

    assert [d.granted for d in decisions] == [True, True, True, False]
    assert [d.retry_after_s for d in decisions[:3]] == [0, 0, 0]
    assert 0 < decisions[3].retry_after_s <= 1 / 20  # one token at 20 a second, less what refilled meanwhile


def test_a_bucket_refills_with_elapsed_time_and_says_when(conn) -> None:
    assert rate_limits.take(conn, "k", rate_per_s=20, burst=100, cost=100).granted
    refused = rate_limits.take(conn, "k", rate_per_s=20, burst=100, cost=10)
    assert not refused.granted
    assert 0.4 < refused.retry_after_s <= 0.5  # 10 tokens at 20 a second

    time.sleep(refused.retry_after_s / 2)
    assert not rate_limits.take(conn, "k", rate_per_s=20, burst=100, cost=10).granted  # half refilled
    time.sleep(refused.retry_after_s / 2 + 0.02)
    assert rate_limits.take(conn, "k", rate_per_s=20, burst=100, cost=10).granted


def test_a_bucket_never_holds_more_than_its_burst(conn) -> None:
    assert rate_limits.take(conn, "k", rate_per_s=100, burst=5, cost=5).granted
    time.sleep(0.2)  # 20 tokens' worth of time

    assert rate_limits.take(conn, "k", rate_per_s=100, burst=5, cost=5).granted
    assert not rate_limits.take(conn, "k", rate_per_s=100, burst=5, cost=5).granted  # 50 ms from enough again


def test_buckets_are_independent(conn) -> None:
    assert rate_limits.take(conn, "a", rate_per_s=1, burst=1).granted
    assert not rate_limits.take(conn, "a", rate_per_s=1, burst=1).granted
    assert rate_limits.take(conn, "b", rate_per_s=1, burst=1).granted


def test_a_rate_of_zero_grants_everything_and_stores_nothing(conn) -> None:
    assert all(rate_limits.take(conn, "k", rate_per_s=0, burst=1).granted for _ in range(50))
    assert count(conn, "rate_limit_buckets") == 0


def test_a_take_larger_than_the_burst_is_a_programming_error(conn) -> None:
    with pytest.raises(ValueError, match="never be granted"):
        rate_limits.take(conn, "k", rate_per_s=10, burst=5, cost=6)


def test_the_table_is_unlogged(conn) -> None:
    assert conn.execute("SELECT relpersistence FROM pg_class WHERE relname = 'rate_limit_buckets'").fetchone() == ("u",)


def test_concurrent_takers_never_get_more_than_burst_plus_rate_times_elapsed(database_url: str) -> None:
    rate, burst, threads, duration = 50.0, 10.0, 4, 0.6
    granted = [0] * threads
    refused = [0] * threads
    start = threading.Barrier(threads)

    def hammer(index: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            start.wait()
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                if rate_limits.take(own, "shared", rate, burst).granted:
                    granted[index] += 1
                else:
                    refused[index] += 1

    began = time.monotonic()
    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began

    assert sum(refused) > 0  # the bucket was really contended
    assert burst <= sum(granted) <= burst + rate * elapsed
    assert sum(granted) >= rate * duration * 0.5  # and it did refill while they hammered


# --- the per-app request limit ------------------------------------------------------------------


def test_over_the_limit_is_429_in_the_error_shape_with_retry_after(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=0.5, rate_limit_burst=3) as app:
        client = app.test_client()
        answers = [client.get(f"/status/{uuid.uuid4()}", headers=bearer(key)) for _ in range(4)]

    assert [a.status_code for a in answers] == [404, 404, 404, 429]
    limited = answers[3]
    assert limited.json["error"]["code"] == "rate_limited"
    assert limited.json["error"]["message"]
    assert limited.json["error"]["details"]["limit_per_s"] == 0.5
    assert limited.json["error"]["details"]["burst"] == 3
    assert limited.headers["Retry-After"] == "2"  # one token at 0.5 a second, in whole seconds
    assert limited.json["error"]["details"]["retry_after_s"] == 2


def test_retry_after_is_at_least_one_second(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=20, rate_limit_burst=1) as app:
        client = app.test_client()
        answers = [client.get(f"/status/{uuid.uuid4()}", headers=bearer(key)) for _ in range(5)]

    limited = [a for a in answers if a.status_code == 429]
    assert limited
    assert all(a.headers["Retry-After"] == "1" for a in limited)


def test_a_rate_limited_post_queue_stores_nothing(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=0.1, rate_limit_burst=2) as app:
        client = app.test_client()
        for i in range(2):
            accepted = client.post("/queue", json=message(), headers=bearer(key) | {"Idempotency-Key": f"k{i}"})
            assert accepted.status_code == 202
        before = {table: count(conn, table) for table in ("jobs", "recipients", "job_events", "idempotency_keys",
                                                          "procrastinate_jobs")}

        limited = client.post("/queue", json=message(), headers=bearer(key) | {"Idempotency-Key": "k-limited"})

    assert limited.status_code == 429
    assert {table: count(conn, table) for table in before} == before
    assert conn.execute("SELECT count(*) FROM idempotency_keys WHERE key = 'k-limited'").fetchone() == (0,)


def test_one_apps_traffic_does_not_limit_another(settings, conn) -> None:
    busy, quiet = make_key(conn, "busy"), make_key(conn, "quiet")
    with app_with(settings, rate_limit_per_s=0.1, rate_limit_burst=2) as app:
        client = app.test_client()
        busy_codes = [client.post("/queue", json=message(), headers=bearer(busy)).status_code for _ in range(4)]
        quiet_codes = [client.post("/queue", json=message(), headers=bearer(quiet)).status_code for _ in range(2)]

    assert busy_codes == [202, 202, 429, 429]
    assert quiet_codes == [202, 202]


def test_a_bad_key_is_401_even_while_the_app_is_limited(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=0.1, rate_limit_burst=1) as app:
        client = app.test_client()
        client.get(f"/status/{uuid.uuid4()}", headers=bearer(key))
        assert client.get(f"/status/{uuid.uuid4()}", headers=bearer(key)).status_code == 429
        assert client.get(f"/status/{uuid.uuid4()}", headers=bearer(key + "x")).status_code == 401
        assert client.get("/healthz").status_code == 200  # unauthenticated endpoints are not limited


def test_a_limit_of_zero_disables_it(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=0, rate_limit_burst=1) as app:
        client = app.test_client()
        codes = {client.get(f"/status/{uuid.uuid4()}", headers=bearer(key)).status_code for _ in range(20)}

    assert codes == {404}
    assert count(conn, "rate_limit_buckets") == 0


def test_each_request_is_counted_once(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=0.01, rate_limit_burst=100) as app:
        client = app.test_client()
        job_id = client.post("/queue", json=message(), headers=bearer(key)).json["id"]  # asks for the app twice
        assert client.get(f"/status/{job_id}", headers=bearer(key)).status_code == 200

    tokens = conn.execute("SELECT tokens FROM rate_limit_buckets WHERE key LIKE 'app:%'").fetchone()
    assert tokens is not None
    assert 98 <= tokens[0] < 98.1  # 100 - 2 requests, plus the little that refilled in between


# --- the global cap on Mailjet calls ------------------------------------------------------------


def run_senders(settings: Settings, workers: int, batches_each: int) -> list[send_results.BatchOutcome]:
    """`workers` threads, each with its own pool (as separate processes would have), sending batches."""
    outcomes: list[send_results.BatchOutcome] = []
    lock = threading.Lock()

    def work() -> None:
        pool = db.create_pool(settings, name="test-sender")
        client = mailjet.MailjetClient(settings.mailjet_api_url, "key", "secret", timeout=settings.mailjet_timeout_s)
        try:
            for _ in range(batches_each):
                outcome = sending.send_due_batch(pool, client, settings)
                with lock:
                    outcomes.append(outcome)
        finally:
            pool.close()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def drain_mailjet_bucket(conn: psycopg.Connection, cap: float) -> None:
    assert rate_limits.take(conn, rate_limits.MAILJET_KEY, cap, cap, cost=cap).granted


def test_workers_share_the_cap_on_mailjet_calls_and_wait_instead_of_failing(
    client, auth, send_settings, simulator, conn
) -> None:
    import requests

    cap = 5.0
    settings = dataclasses.replace(send_settings, mailjet_max_calls_per_s=cap, send_batch_size=1)
    ids = [client.post("/queue", json=message(f"r{i}@example.org"), headers=auth).json["id"] for i in range(6)]
    drain_mailjet_bucket(conn, cap)

    began = time.monotonic()
    outcomes = run_senders(settings, workers=2, batches_each=3)
    elapsed = time.monotonic() - began

    assert sum(o.sent for o in outcomes) == 6
    assert elapsed >= 6 / cap - 0.05  # six calls from an empty bucket at five a second
    assert elapsed < 6 / cap + 1.5  # and no needless waiting
    sends = requests.get(f"{simulator}/_sim/sends", timeout=5).json()
    assert sends["calls"] == 6
    assert sends["by_custom_id"] == dict.fromkeys(ids, 1)


def test_the_check_with_mailjet_before_a_resend_is_capped_too(client, auth, send_settings, simulator, conn) -> None:
    cap = 5.0
    settings = dataclasses.replace(send_settings, mailjet_max_calls_per_s=cap)
    client.post("/queue", json=message(), headers=auth)
    conn.execute("UPDATE jobs SET verify_before_send = true")
    drain_mailjet_bucket(conn, cap)

    began = time.monotonic()
    outcomes = run_senders(settings, workers=1, batches_each=1)
    elapsed = time.monotonic() - began

    assert outcomes[0].sent == 1
    assert elapsed >= 2 / cap - 0.05  # the lookup and the send each waited for a token


def test_a_cap_of_zero_does_not_wait(client, auth, send_settings, simulator, conn) -> None:
    settings = dataclasses.replace(send_settings, mailjet_max_calls_per_s=0, send_batch_size=1)
    for i in range(6):
        client.post("/queue", json=message(f"r{i}@example.org"), headers=auth)

    began = time.monotonic()
    outcomes = run_senders(settings, workers=1, batches_each=6)

    assert sum(o.sent for o in outcomes) == 6
    assert time.monotonic() - began < 1.0
    assert conn.execute("SELECT count(*) FROM rate_limit_buckets WHERE key = 'mailjet'").fetchone() == (0,)


def test_an_unreachable_database_does_not_hold_the_sender(settings) -> None:
    nowhere = dataclasses.replace(
        settings, database_url=f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/none", db_timeout_s=0.3
    )
    pool = db.create_pool(nowhere, name="test-nowhere")
    try:
        began = time.monotonic()
        rate_limits.wait_for_mailjet(pool, nowhere)
        assert time.monotonic() - began < 2
    finally:
        pool.close()


def test_the_wait_for_a_mailjet_call_gives_up_at_its_deadline_without_sleeping_past_it(settings, conn) -> None:
    cap = 1.0
    capped = dataclasses.replace(settings, mailjet_max_calls_per_s=cap)
    drain_mailjet_bucket(conn, cap)  # the next token comes in about a second
    pool = db.create_pool(capped, name="test-deadline")
    slept: list[float] = []
    try:
        assert not rate_limits.wait_for_mailjet(pool, capped, sleep=slept.append, deadline=time.monotonic() + 0.5)
        assert slept == []
        assert not rate_limits.wait_for_mailjet(pool, capped, sleep=slept.append, deadline=time.monotonic())
        assert rate_limits.wait_for_mailjet(pool, capped, deadline=time.monotonic() + 5)  # waits for the token
    finally:
        pool.close()
