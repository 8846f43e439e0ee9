"""Issue 17, the fan-out: a status change costs its transaction the same whatever the endpoint count; the
worker writes the deliveries afterwards in bounded batches; revoked apps get nothing; no JIT in the worker's
hot queries."""

from __future__ import annotations

import dataclasses
import json
import time

import psycopg
import pytest
from psycopg import sql

from mailer.services import webhook_delivery
from mailer.store.queries import query
from tests.integration.webhooks_support import expand, mark_sent, queue

URL = "https://93.184.215.14/hook/"  # never called: these tests stop before any post


def add_endpoints(conn: psycopg.Connection, app_id: int, count: int, events: str = "{*}") -> None:
    """`count` enabled endpoints of one app, written directly (an installation from before the cap)."""
    conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret) "
        "SELECT %s, %s || %s || '/' || %s || '/' || n, %s, 'whsec_' || md5(n::text) FROM generate_series(1, %s) AS n",
        (app_id, URL, app_id, events, events, count),
    )


def app_of(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT id FROM apps ORDER BY id LIMIT 1").fetchone()[0])  # type: ignore[index]


def count(conn: psycopg.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]  # noqa: S608


FIFTY = [f"r{n}@example.org" for n in range(50)]


def test_a_status_change_writes_one_row_per_recipient_whatever_the_endpoint_count(client, auth, conn):
    add_endpoints(conn, app_of(conn), 150)
    job_id = queue(client, auth, *FIFTY)

    with conn.transaction():
        mark_sent(conn, job_id)  # one statement: 50 recipients change
        written_inside = (count(conn, "webhook_messages"), count(conn, "webhook_fan_outs"),
                          count(conn, "webhook_deliveries"))

    assert written_inside == (50, 50, 0)  # was 50 messages and 7,500 deliveries
    assert expand(conn) == 50 * 150
    assert count(conn, "webhook_fan_outs") == 0
    per_pair = conn.execute("SELECT count(DISTINCT (message_id, endpoint_id)), count(*) FROM webhook_deliveries")
    assert per_pair.fetchone() == (7500, 7500)  # one per message per endpoint


def test_the_expansion_writes_bounded_batches_and_each_delivery_once(client, auth, conn):
    add_endpoints(conn, app_of(conn), 150)
    add_endpoints(conn, app_of(conn), 5, events="{bounced}")  # not interested in `sent`
    first, second = queue(client, auth, "a@example.org"), queue(client, auth, "b@example.org")
    mark_sent(conn, first)
    mark_sent(conn, second, 2**60 + 100)

    batches = []
    while True:
        written = conn.execute("SELECT webhook_expand_fan_outs(100)").fetchone()[0]  # type: ignore[index]
        batches.append(written)
        if written < 100:
            break
    assert batches == [100, 100, 100, 0]  # the first message needs two batches, the second ends the third
    rows = conn.execute(
        "SELECT m.body ->> 'data', count(*), count(DISTINCT d.endpoint_id), min(d.next_attempt_at) = m.created_at "
        "FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id GROUP BY m.id, m.created_at "
        "ORDER BY m.created_at"
    ).fetchall()
    assert [(json.loads(row[0])["recipient"], row[1], row[2], row[3]) for row in rows] == [
        ("a@example.org", 150, 150, True), ("b@example.org", 150, 150, True)]


def test_a_second_expander_waits_its_turn_instead_of_writing_out_of_order(client, auth, conn, database_url):
    add_endpoints(conn, app_of(conn), 3)
    mark_sent(conn, queue(client, auth))
    with psycopg.connect(database_url) as other:
        other.execute("SELECT webhook_expand_fan_outs(1)")  # holds the expansion lock until it commits
        assert expand(conn) == 0
        other.commit()
    assert expand(conn) == 2


def test_revoked_apps_get_no_fan_out_and_no_claims(client, auth, conn, settings):
    app_id = app_of(conn)
    add_endpoints(conn, app_id, 2)
    waiting, later = queue(client, auth), queue(client, auth, "b@example.org")
    mark_sent(conn, waiting)  # its fan-out waits for the worker
    conn.execute("UPDATE apps SET revoked_at = now() WHERE id = %s", (app_id,))

    mark_sent(conn, later, 2**60 + 100)
    assert count(conn, "webhook_messages") == 1  # the change after the revocation is not even recorded
    assert expand(conn) == 0 and count(conn, "webhook_fan_outs") == 0  # the waiting one is dropped
    conn.execute("UPDATE apps SET revoked_at = NULL WHERE id = %s", (app_id,))
    mark_sent(conn, queue(client, auth, "c@example.org"), 2**60 + 200)
    assert expand(conn) == 2
    conn.execute("UPDATE apps SET revoked_at = now() WHERE id = %s", (app_id,))
    with psycopg.connect(settings.database_url) as claimer:
        claimed = claimer.execute(
            query("claim_webhook_deliveries"), {"limit": 10, "per_endpoint": 8, "per_app": 16, "lease_s": 60}
        )
        assert claimed.fetchall() == []


def test_the_worker_expands_before_it_claims_within_its_batch_size(client, auth, conn, pool, settings):
    add_endpoints(conn, app_of(conn), 30)
    mark_sent(conn, queue(client, auth, *FIFTY))
    small = dataclasses.replace(settings, webhook_expand_batch=200)

    written = webhook_delivery.expand(pool, small, budget_s=0.0)  # one batch, then the claim's turn
    assert written == 200
    assert webhook_delivery.expand(pool, small) == 1500 - 200
    assert count(conn, "webhook_deliveries") == 1500


# --- JIT ------------------------------------------------------------------------------------------


def many_endpoints(conn: psycopg.Connection, apps: int, per_app: int) -> None:
    conn.execute(
        "INSERT INTO apps (name, key_id, key_hash) SELECT 'bulk' || n, 'bulk' || n, '\\x00' "
        "FROM generate_series(1, %s) AS n", (apps,),
    )
    conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret) "
        "SELECT a.id, %s || a.id || '/' || n, '{*}', 'whsec_x' FROM apps a, generate_series(1, %s) AS n "
        "WHERE a.name LIKE 'bulk%%'", (URL, per_app),
    )
    # and their history: 10 delivered messages each
    conn.execute("INSERT INTO webhook_messages (id, app_id, type, body) "
                 "SELECT 'msg_' || n, (SELECT min(id) FROM apps), 'email.sent', '{}' FROM generate_series(1, 10) AS n")
    conn.execute("INSERT INTO webhook_deliveries (message_id, message_created_at, endpoint_id, status) "
                 "SELECT m.id, m.created_at, e.id, 'succeeded' FROM webhook_messages AS m, webhook_endpoints AS e")
    conn.execute("ANALYZE")


def jit_in(conn: psycopg.Connection, text: str, params: dict) -> bool:
    plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + sql.SQL(text), params)  # type: ignore[arg-type]
    return "JIT" in plan.fetchone()[0][0]  # type: ignore[index]


def test_no_worker_query_is_jit_compiled_however_many_endpoints(conn):
    if not conn.execute("SELECT pg_jit_available()").fetchone()[0]:  # type: ignore[index]
        pytest.skip("this PostgreSQL has no JIT")
    many_endpoints(conn, 1000, 10)
    params = {"limit": 50, "per_endpoint": 8, "per_app": 16, "lease_s": 70, "max_rows": 1000}
    body = conn.execute(  # the claim of migration 0024 (0020's, with three arguments, stays for rolling deploys)
        "SELECT prosrc FROM pg_proc WHERE proname = 'webhook_claim_deliveries' AND pronargs = 4").fetchone()[0]  # type: ignore[index]
    # since 0029 a PL/pgSQL function: its main statement, bounded by no month (every partition read)
    statement = body.split("RETURN QUERY", 1)[1].rsplit("END;", 1)[0].replace("oldest", "'-infinity'::timestamptz")
    inline = statement.replace("claim_limit", "%(limit)s").replace("per_endpoint", "%(per_endpoint)s").replace(
        "per_app", "%(per_app)s").replace("lease_s", "%(lease_s)s")
    assert jit_in(conn, inline.strip().rstrip(";"), params)  # what the worker paid ~225 ms a call for

    for name in ("claim_webhook_deliveries", "expand_webhook_fan_outs"):
        assert not jit_in(conn, query(name), params), name
    configs = dict(conn.execute(
        "SELECT proname, proconfig FROM pg_proc WHERE proname IN ('webhook_claim_deliveries', "
        "'webhook_expand_fan_outs')").fetchall())
    assert configs == {"webhook_claim_deliveries": ["jit=off"], "webhook_expand_fan_outs": ["jit=off"]}
    # and the idle claim (nothing due: every second, on every worker) is one index probe, not 20,000
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        conn.execute(query("claim_webhook_deliveries"), params).fetchall()
        timings.append(time.perf_counter() - started)
    assert sorted(timings)[2] < 0.05, timings  # ~1 ms; it was ~70 ms of JIT plus ~50 ms of probes
