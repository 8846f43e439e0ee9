"""Migration 0029 on an installation that already has history: every row moves into its month, ids go on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest

from mailer.store import migrations
from mailer.store.queries import SQL_DIR

NOW = dt.datetime.now(dt.UTC)
OLD = NOW - dt.timedelta(days=100)


@pytest.fixture
def before_0029(pg_cluster) -> Iterator[tuple[psycopg.Connection, str]]:  # type: ignore[no-untyped-def]
    """A database with the migrations before 0029 applied, as an existing deployment has it."""
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS history_upgrade")
        admin.execute("CREATE DATABASE history_upgrade")
    url = pg_cluster.url("history_upgrade")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for path in sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
                if int(path.stem[:4]) >= 29:
                    continue
                conn.execute(path.read_text())  # type: ignore[arg-type]  # our migration files
                conn.execute("INSERT INTO mailer_migrations (name) VALUES (%s)", (path.stem,))
            yield conn, url
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE history_upgrade WITH (FORCE)")


def fill(conn: psycopg.Connection) -> None:
    """History of two months in the shape before 0029, with an event whose time is absurd."""
    conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'a', '\\x00')")
    conn.execute("INSERT INTO webhook_endpoints (app_id, url, events, secret) VALUES (1, 'http://h/x', '{*}', 's')")
    for at in (OLD, NOW):
        tag = at.strftime("%Y%m")
        conn.execute("INSERT INTO mailjet_events (fingerprint, name, status, occurred_at, payload, received_at) "
                     "VALUES (%s, 'open', 'opened', %s, '{}', %s)", (f"f{tag}", at, at))
        conn.execute("INSERT INTO webhook_messages (id, app_id, type, body, created_at) "
                     "VALUES (%s, 1, 'email.opened', '{}', %s)", (f"msg_{tag}", at))
        conn.execute("INSERT INTO webhook_deliveries (message_id, endpoint_id, status) "
                     "SELECT %s, id, 'pending' FROM webhook_endpoints", (f"msg_{tag}",))
        conn.execute("INSERT INTO webhook_attempts (delivery_id, attempted_at, latency_ms) "
                     "SELECT id, now(), 3 FROM webhook_deliveries WHERE message_id = %s", (f"msg_{tag}",))
        conn.execute("INSERT INTO webhook_fan_outs (message_id) VALUES (%s)", (f"msg_{tag}",))
        conn.execute("INSERT INTO idempotency_keys (app_id, key, request_hash, response_status, response_body, "
                     "created_at) VALUES (1, %s, 'h', 202, '{}', %s)", (f"k{tag}", at))
    conn.execute("INSERT INTO mailjet_events (fingerprint, name, occurred_at, payload, received_at) "
                 "VALUES ('absurd', 'open', '1970-01-01', '{}', %s)", (NOW,))


def months(conn: psycopg.Connection, table: str) -> list[tuple[str, int]]:
    return conn.execute(f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1 ORDER BY 1").fetchall()  # noqa: S608  # fixed names


def test_existing_history_moves_into_month_partitions(before_0029) -> None:
    conn, url = before_0029
    fill(conn)
    counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608  # fixed names
              for table in ("mailjet_events", "webhook_messages", "webhook_deliveries", "webhook_attempts",
                            "webhook_fan_outs", "idempotency_keys")}
    last_delivery = conn.execute("SELECT max(id) FROM webhook_deliveries").fetchone()[0]  # type: ignore[index]

    assert "0029_time_partitioned_history" in migrations.migrate(url)

    old, now = OLD.strftime("%Y%m"), NOW.strftime("%Y%m")
    for table, count in counts.items():
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == count, table  # noqa: S608  # fixed names
    assert months(conn, "webhook_attempts") == [(f"webhook_attempts_p{old}", 1), (f"webhook_attempts_p{now}", 1)]
    assert months(conn, "webhook_fan_outs") == [(f"webhook_fan_outs_p{old}", 1), (f"webhook_fan_outs_p{now}", 1)]
    assert months(conn, "idempotency_keys") == [(f"idempotency_keys_p{old}", 1), (f"idempotency_keys_p{now}", 1)]
    # the absurd time gave way to the arrival, as a new event's would
    assert months(conn, "mailjet_events") == [(f"mailjet_events_p{old}", 1), (f"mailjet_events_p{now}", 2)]
    assert conn.execute("SELECT occurred_at FROM mailjet_events WHERE fingerprint = 'absurd'").fetchone() == (NOW,)
    rows = conn.execute("SELECT d.message_created_at = m.created_at FROM webhook_deliveries d "
                        "JOIN webhook_messages m ON m.id = d.message_id").fetchall()
    assert rows == [(True,), (True,)]
    # new rows get new ids, and the moved pending work is still found
    conn.execute("INSERT INTO webhook_messages (id, app_id, type, body) VALUES ('msg_new', 1, 'email.sent', '{}')")
    new_id = conn.execute("INSERT INTO webhook_deliveries (message_id, message_created_at, endpoint_id) "
                          "SELECT 'msg_new', m.created_at, e.id FROM webhook_messages m, webhook_endpoints e "
                          "WHERE m.id = 'msg_new' RETURNING id").fetchone()[0]  # type: ignore[index]
    assert new_id > last_delivery
    conn.execute("SELECT webhook_expand_fan_outs(100)")
    assert conn.execute("SELECT count(*) FROM webhook_fan_outs").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (3,)  # each had its delivery
    assert conn.execute("SELECT count(*) FROM webhook_claim_deliveries(10, 4, 16, 60)").fetchone() == (3,)


def last_evening_of_a_past_month() -> dt.datetime:
    """23:30 UTC on the last day of the month before OLD's: already the next day in Pacific/Kiritimati (UTC+14)."""
    return OLD.replace(day=1, hour=23, minute=30, second=0, microsecond=0) - dt.timedelta(days=1)


def test_months_are_utc_and_made_ahead_whatever_the_session_time_zone_with_no_webhook_history(before_0029) -> None:
    conn, _ = before_0029
    conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'a', '\\x00')")
    at = last_evening_of_a_past_month()
    conn.execute("INSERT INTO idempotency_keys (app_id, key, request_hash, response_status, response_body, "
                 "created_at) VALUES (1, 'k', 'h', 202, '{}', %s)", (at,))
    conn.execute("SET TimeZone = 'Pacific/Kiritimati'")

    conn.execute((SQL_DIR / "migrations" / "0029_time_partitioned_history.sql").read_text())  # type: ignore[arg-type]

    assert months(conn, "idempotency_keys") == [(f"idempotency_keys_p{at:%Y%m}", 1)]
    first = NOW.date().replace(day=1)
    ahead = [(first + dt.timedelta(days=31 * n)).replace(day=1) for n in range(4)]
    for parent in ("mailjet_events", "webhook_messages", "webhook_deliveries", "webhook_attempts",
                   "webhook_fan_outs", "idempotency_keys"):
        made = {row[0] for row in conn.execute("SELECT month FROM mailer_month_partitions(%s)", (parent,)).fetchall()}
        assert set(ahead) <= made, parent
