"""GET /metrics: Prometheus text format; the counters, gauges and histogram move with the work done.

The counters live in this test process's default registry (no PROMETHEUS_MULTIPROC_DIR here), shared by
every test of the session: each test compares a scrape before with a scrape after. The multiprocess mode
is tested with real gunicorn processes in tests/e2e/test_metrics_e2e.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import flask
import psycopg
import psycopg_pool
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mailer import create_app, db, pgcluster, store
from mailer.config import Settings
from mailer.services import webhook_delivery
from tests.integration.sending_support import make_due, message, run_sender, script
from tests.integration.webhooks_support import expand, mark_sent, post_events, register
from tests.webhook_receiver import Receiver, running_receiver

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Every scrape reads the database here, so that a scrape right after a change shows it (the interval
    # itself is tested below).
    return dataclasses.replace(settings, metrics_db_interval_s=0)


def scrape(client: flask.testing.FlaskClient) -> Samples:
    """Every sample of GET /metrics, by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_answer_the_text_format_without_auth(client) -> None:
    samples = scrape(client)

    assert value(samples, "mailer_metrics_database_up") == 1
    for name, labels in [
        ("mailer_jobs_total", {"status": "sent", "priority": "transactional"}),
        ("mailer_jobs_waiting", {"status": "queued", "priority": "bulk"}),
        ("mailer_queue_depth", {"priority": "transactional"}),
        ("mailer_queue_oldest_age_seconds", {"priority": "bulk"}),
        ("mailer_webhook_backlog", {}),
        ("mailer_send_latency_seconds_count", {}),
        ("mailer_events_received_total", {"type": "open"}),
        ("mailer_webhook_deliveries_total", {"outcome": "succeeded"}),
    ]:
        assert (name, tuple(sorted(labels.items()))) in samples, name
    assert any(name.startswith("process_") or name.startswith("python_") for name, _ in samples)


def test_queueing_and_sending_a_job_move_the_counters_gauges_and_histogram(client, auth, send_settings) -> None:
    before = scrape(client)
    client.post("/queue", json={**message("ann@example.org"), "priority": "bulk"}, headers=auth)
    client.post("/queue", json=message("bob@example.org"), headers=auth)

    queued = scrape(client)

    assert value(queued, "mailer_jobs_total", status="queued", priority="bulk") == value(
        before, "mailer_jobs_total", status="queued", priority="bulk") + 1
    assert value(queued, "mailer_jobs_waiting", status="queued", priority="transactional") == 1
    assert value(queued, "mailer_queue_depth", priority="bulk") == 1
    assert value(queued, "mailer_queue_depth", priority="transactional") == 1
    assert value(queued, "mailer_queue_oldest_age_seconds", priority="bulk") > 0

    assert run_sender(send_settings).sent == 2
    sent = scrape(client)

    for priority in ("bulk", "transactional"):
        assert value(sent, "mailer_jobs_total", status="sent", priority=priority) == value(
            before, "mailer_jobs_total", status="sent", priority=priority) + 1
        assert value(sent, "mailer_queue_depth", priority=priority) == 0
        assert value(sent, "mailer_queue_oldest_age_seconds", priority=priority) == 0
    assert value(sent, "mailer_send_latency_seconds_count") == value(before, "mailer_send_latency_seconds_count") + 1
    assert value(sent, "mailer_send_claim_seconds_count") > value(before, "mailer_send_claim_seconds_count")
    assert value(sent, "mailer_send_latency_seconds_sum") > value(before, "mailer_send_latency_seconds_sum")
    assert value(sent, "mailer_mailjet_responses_total", call="send", code="200") == value(
        before, "mailer_mailjet_responses_total", call="send", code="200") + 1


def test_mailjet_errors_are_counted_by_code_and_transport_errors_apart(
    client, auth, conn, settings, send_settings, simulator
) -> None:
    before = scrape(client)
    client.post("/queue", json=message("ann@example.org"), headers=auth)
    script(simulator, "429")
    assert run_sender(send_settings).retried == 1
    make_due(conn)
    assert run_sender(settings).retried == 1  # Mailjet at a port where nothing listens

    after = scrape(client)

    assert value(after, "mailer_mailjet_responses_total", call="send", code="429") == value(
        before, "mailer_mailjet_responses_total", call="send", code="429") + 1
    assert value(after, "mailer_mailjet_responses_total", call="send", code="transport") == value(
        before, "mailer_mailjet_responses_total", call="send", code="transport") + 1
    assert value(after, "mailer_jobs_waiting", status="queued", priority="transactional") == 1


def test_events_are_counted_by_mailjet_type(client) -> None:
    before = scrape(client)

    post_events(client, [
        {"event": "open", "time": 1700000000, "MessageID": 1, "email": "ann@example.org"},
        {"event": "open", "time": 1700000001, "MessageID": 1, "email": "ann@example.org"},
        {"event": "bounce", "time": 1700000002, "MessageID": 2, "email": "bob@example.org", "hard_bounce": True},
        {"event": "something_new", "time": 1700000003, "MessageID": 3, "email": "cy@example.org"},
    ])
    after = scrape(client)

    for kind, more in (("open", 2), ("bounce", 1), ("other", 1), ("click", 0)):
        assert value(after, "mailer_events_received_total", type=kind) == value(
            before, "mailer_events_received_total", type=kind) + more, kind


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, webhook_allow_private=True, webhook_retry_schedule=(60,), webhook_timeout_s=2.0
    )


@pytest.fixture
def webhook_app(webhook_settings: Settings) -> Iterator[flask.Flask]:
    application = create_app(webhook_settings)
    yield application
    application.extensions["mailer.pool"].close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def test_webhook_backlog_and_deliveries_by_outcome(webhook_app, webhook_settings, api_key, conn, receiver) -> None:
    client = webhook_app.test_client()
    auth = {"Authorization": f"Bearer {api_key}"}
    register(client, auth, receiver.url("/ok"))
    register(client, auth, receiver.url("/fail"))
    receiver.plan("/fail", status=500)
    before = scrape(client)
    job_id = client.post("/queue", json=message("ann@example.org"), headers=auth).json["id"]
    mark_sent(conn, job_id)  # the sender's record: one `email.sent` message for each endpoint
    expand(conn)  # what the worker does before it claims: one delivery per endpoint

    pending = scrape(client)
    pool: psycopg_pool.ConnectionPool = db.create_pool(webhook_settings, name="test-metrics-webhooks")
    try:
        done = webhook_delivery.deliver_due_batch(pool, webhook_settings)
    finally:
        pool.close()
    after = scrape(client)

    assert sorted(delivered.status or "" for delivered in done) == ["pending", "succeeded"]
    assert value(pending, "mailer_webhook_backlog") == 2
    assert value(after, "mailer_webhook_backlog") == 1  # the failed one waits for its retry
    for outcome, more in (("succeeded", 1), ("retry", 1), ("failed", 0)):
        assert value(after, "mailer_webhook_deliveries_total", outcome=outcome) == value(
            before, "mailer_webhook_deliveries_total", outcome=outcome) + more, outcome


def test_with_the_database_down_the_scrape_still_answers_without_the_database_gauges(settings) -> None:
    down = dataclasses.replace(
        settings, database_url=f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/nothing", db_timeout_s=0.5
    )
    app = create_app(down)
    try:
        samples = scrape(app.test_client())
    finally:
        app.extensions["mailer.pool"].close()

    assert value(samples, "mailer_metrics_database_up") == 0
    assert ("mailer_queue_depth", (("priority", "bulk"),)) not in samples
    assert ("mailer_jobs_total", (("priority", "bulk"), ("status", "sent"))) in samples


def test_jobs_being_sent_are_counted_until_their_outcome_is_recorded(client, auth, conn) -> None:
    client.post("/queue", json=message("ann@example.org"), headers=auth)
    client.post("/queue", json={**message("bob@example.org"), "priority": "bulk"}, headers=auth)
    with conn.transaction():
        claimed = store.claim_due_jobs(conn, limit=1)

    assert value(scrape(client), "mailer_jobs_waiting", status="sending", priority="transactional") == 1
    with conn.transaction():
        store.mark_jobs_sent(conn, ids=[claimed.jobs[0].id])
    samples = scrape(client)
    assert value(samples, "mailer_jobs_waiting", status="sending", priority="transactional") == 0
    assert value(samples, "mailer_jobs_waiting", status="queued", priority="bulk") == 1


def database_reads() -> float:
    return REGISTRY.get_sample_value("mailer_metrics_database_reads_total") or 0.0


def test_many_scrapes_within_the_interval_cost_one_round_of_queries(settings, auth) -> None:
    app = create_app(dataclasses.replace(settings, metrics_db_interval_s=3600))
    try:
        client = app.test_client()
        reads = database_reads()
        first = scrape(client)
        assert value(first, "mailer_metrics_database_up") == 1
        assert client.post("/queue", json=message("ann@example.org"), headers=auth).status_code == 202

        def scrape_many() -> None:
            own = app.test_client()
            for _ in range(25):
                assert value(scrape(own), "mailer_jobs_waiting", status="queued", priority="transactional") == 0

        scrapers = [threading.Thread(target=scrape_many) for _ in range(8)]  # 200 scrapes, 8 at a time
        for thread in scrapers:
            thread.start()
        for thread in scrapers:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in scrapers)
        assert database_reads() == reads + 1  # one round of queries for all 201 scrapes
        assert value(scrape(client), "mailer_metrics_database_age_seconds") > 0
    finally:
        app.extensions["mailer.pool"].close()


def test_the_gauges_are_read_again_once_the_interval_has_passed(settings, auth) -> None:
    app = create_app(dataclasses.replace(settings, metrics_db_interval_s=1))
    try:
        client = app.test_client()
        scrape(client)
        reads = database_reads()
        assert client.post("/queue", json=message("ann@example.org"), headers=auth).status_code == 202
        time.sleep(1.1)
        samples = scrape(client)
        assert value(samples, "mailer_jobs_waiting", status="queued", priority="transactional") == 1
        assert value(samples, "mailer_metrics_database_age_seconds") < 1
        assert database_reads() == reads + 1
    finally:
        app.extensions["mailer.pool"].close()


def test_with_no_interval_every_scrape_reads_the_database(client) -> None:
    reads = database_reads()
    for _ in range(3):
        scrape(client)
    assert database_reads() == reads + 3


def test_a_database_that_is_down_is_tried_once_per_interval(settings) -> None:
    down = dataclasses.replace(
        settings, database_url=f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/nothing", db_timeout_s=0.5,
        metrics_db_interval_s=3600,
    )
    app = create_app(down)
    try:
        client = app.test_client()
        reads = database_reads()
        assert value(scrape(client), "mailer_metrics_database_up") == 0
        started = time.monotonic()
        for _ in range(5):
            assert value(scrape(client), "mailer_metrics_database_up") == 0
        assert time.monotonic() - started < 2  # no scrape waited for the database again
        assert database_reads() == reads + 1
    finally:
        app.extensions["mailer.pool"].close()


def test_a_metrics_file_another_process_has_only_just_created_does_not_fail_the_scrape(
    settings, tmp_path, monkeypatch
) -> None:
    # prometheus_client creates a process's file before sizing it: a scrape in between found 0 bytes and
    # answered 500 (seen in tests/e2e/test_metrics_e2e.py while the worker started).
    (tmp_path / "counter_4242.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    app = create_app(settings)
    try:
        samples = scrape(app.test_client())
    finally:
        app.extensions["mailer.pool"].close()
    assert value(samples, "mailer_metrics_database_up") == 1


def test_the_oldest_transaction_and_its_snapshot_show_while_a_reader_holds_one(client, auth, database_url) -> None:
    assert value(scrape(client), "mailer_db_oldest_transaction_age_seconds") < 1.0  # the scrape's own is left out

    with psycopg.connect(database_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM jobs")  # its snapshot is taken here
        for n in range(3):  # transactions the snapshot is older than
            assert client.post("/queue", json=message(f"n{n}@example.org"), headers=auth).status_code == 202
        time.sleep(1.2)
        held = scrape(client)
        reader.rollback()

    assert value(held, "mailer_db_oldest_transaction_age_seconds") >= 1.2
    assert value(held, "mailer_db_oldest_snapshot_age_transactions") >= 3
    after = scrape(client)
    assert value(after, "mailer_db_oldest_transaction_age_seconds") < 1.0
    assert value(after, "mailer_db_oldest_snapshot_age_transactions") == 0
