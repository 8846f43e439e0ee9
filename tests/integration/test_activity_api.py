"""GET /activity (issue 22): every recipient status change of the app once, in commit order, a page at a time."""

from __future__ import annotations

import base64
import datetime as dt
import time

import flask
import psycopg

from mailer.domain import activity as rules
from mailer.services import retention
from mailer.store.queries import query
from tests.integration.conftest import app_with, make_key
from tests.integration.webhooks_support import BIG_ID, mark_sent, post_events, queue, set_status


def walk(client, auth, cursor: str | None = None, **params: str) -> tuple[list[dict], str]:  # type: ignore[no-untyped-def]
    """Every page from `cursor` until an empty one: the items and the cursor to poll from."""
    items: list[dict] = []
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = client.get("/activity", query_string=query, headers=auth)
        assert response.status_code == 200, response.data
        page = response.json
        assert isinstance(page["next_cursor"], str)
        cursor = page["next_cursor"]
        if not page["items"]:
            return items, cursor
        items.extend(page["items"])


def test_each_change_is_shaped_as_its_webhook_body_plus_an_id(client, auth, conn):
    job_id = queue(client, auth, "ann@example.org", metadata={"order_id": 1001})
    mark_sent(conn, job_id)
    at = int(time.time()) - 60
    post_events(client, [{"event": "open", "time": at, "MessageID": BIG_ID, "email": "ann@example.org",
                          "ip": "192.0.2.1", "geo": "DE", "agent": "Mozilla"}])

    items, _ = walk(client, auth)

    assert [item["type"] for item in items] == ["email.sent", "email.opened"]
    sent, opened = items
    assert isinstance(sent["id"], int) and sent["id"] < opened["id"]
    assert set(sent) == {"id", "type", "timestamp", "data"}
    assert sent["data"] == {"job_id": job_id, "recipient": "ann@example.org", "message_id": str(BIG_ID),
                            "status": "sent", "metadata": {"order_id": 1001},
                            "event": {"type": "sent", "at": sent["timestamp"]}}
    assert opened["data"]["status"] == "opened"
    opened_at = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as webhook bodies write it
    assert opened["data"]["event"] == {"type": "opened", "at": opened_at, "mailjet_event": "open",
                                       "ip": "192.0.2.1", "geo": "DE", "agent": "Mozilla"}


def test_pages_follow_one_another_and_the_last_cursor_picks_up_later_changes(client, auth, conn):
    job_id = queue(client, auth, *(f"r{n}@example.org" for n in range(7)))
    mark_sent(conn, job_id)

    first = client.get("/activity?limit=3", headers=auth).json
    second = client.get(f"/activity?limit=3&cursor={first['next_cursor']}", headers=auth).json
    items, cursor = walk(client, auth, second["next_cursor"], limit="3")
    recipients = [item["data"]["recipient"] for item in first["items"] + second["items"] + items]
    assert recipients == [f"r{n}@example.org" for n in range(7)]

    set_status(conn, job_id, "delivered")
    later, _ = walk(client, auth, cursor)
    assert [item["type"] for item in later] == ["email.delivered"] * 7
    assert walk(client, auth, cursor)[0] == later  # the same cursor reads the same changes again


def test_types_keeps_only_the_named_changes(client, auth, conn):
    job_id = queue(client, auth, "ann@example.org")
    mark_sent(conn, job_id)
    set_status(conn, job_id, "delivered")
    set_status(conn, job_id, "bounced")

    items, _ = walk(client, auth, types="email.bounced,delivered")

    assert [item["type"] for item in items] == ["email.delivered", "email.bounced"]


def test_another_apps_changes_are_never_seen(client, auth, conn):
    other = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    mark_sent(conn, queue(client, other, "shop@example.org"))
    mark_sent(conn, queue(client, auth, "ann@example.org"))

    mine, _ = walk(client, auth)
    theirs, _ = walk(client, other)

    assert [item["data"]["recipient"] for item in mine] == ["ann@example.org"]
    assert [item["data"]["recipient"] for item in theirs] == ["shop@example.org"]


def test_a_retry_resetting_recipients_to_pending_is_no_change(client, auth, conn):
    job_id = queue(client, auth, "ann@example.org")
    set_status(conn, job_id, "failed")
    set_status(conn, job_id, "pending")
    mark_sent(conn, job_id)

    items, _ = walk(client, auth)

    assert [item["type"] for item in items] == ["email.failed", "email.sent"]


def test_an_empty_feed_gives_a_cursor_to_poll_from(client, auth):
    response = client.get("/activity", headers=auth)
    assert response.status_code == 200
    assert response.json["items"] == []
    assert rules.decode_cursor(response.json["next_cursor"]) >= rules.START


def _forged(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_bad_cursor_limit_and_types_are_422_naming_the_parameter(client, auth):
    bad = {
        "cursor": ["garbage!", "x" * 65, _forged("a1.1.x"), _forged(f"a1.{2**64}.1"), _forged("a1.1"),
                   _forged("a1.1.1") + "=="],
        "limit": ["0", "1001", "ten"],
        "types": ["", "email.nope", "delivered,,opened", "pending"],
    }
    for name, values in bad.items():
        for value in values:
            response = client.get("/activity", query_string={name: value}, headers=auth)
            assert response.status_code == 422, (name, value, response.data)
            assert list(response.json["error"]["details"]) == [name], (name, value)
    assert client.get("/activity?cursor=a&cursor=b", headers=auth).status_code == 422
    assert client.get("/activity?since=2026-01-01", headers=auth).status_code == 422


def test_it_needs_a_key(client):
    response = client.get("/activity")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_an_open_writer_holds_the_feed_back_until_it_ends(client, auth, conn, database_url):
    early = queue(client, auth, "early@example.org")
    late = queue(client, auth, "late@example.org")
    with psycopg.connect(database_url) as held:
        mark_sent(held, early)  # takes the lower id and xid, commits last
        mark_sent(conn, late)
        items, cursor = walk(client, auth)
        assert items == []  # late's change waits behind the open transaction
        held.commit()
    items, _ = walk(client, auth, cursor)
    assert [item["data"]["recipient"] for item in items] == ["early@example.org", "late@example.org"]


def test_the_query_is_in_openapi(app: flask.Flask, client):
    spec = client.get("/openapi.json").json
    operation = spec["paths"]["/activity"]["get"]
    assert {param["name"] for param in operation["parameters"]} == {"cursor", "limit", "types"}
    assert "200" in operation["responses"] and "422" in operation["responses"]


def test_the_feeds_lag_shows_while_a_writer_stays_open(settings, database_url):
    def lag() -> float:
        text = metrics.get("/metrics").get_data(as_text=True)
        [line] = [line for line in text.splitlines() if line.startswith("mailer_activity_feed_lag_seconds ")]
        return float(line.split()[1])

    with app_with(settings, metrics_db_interval_s=0) as application, psycopg.connect(database_url) as reader, \
            psycopg.connect(database_url) as writer:
        metrics = application.test_client()
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM jobs")  # a snapshot without a transaction id holds nothing back
        assert lag() < 0.5
        writer.execute("SELECT pg_current_xact_id()")  # as any write does
        time.sleep(0.6)
        assert lag() >= 0.6
        writer.rollback()
        assert lag() < 0.5


def _plan_nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _plan_nodes(child))]


def test_a_page_reads_the_apps_index_from_the_cursor_on(conn, app_id):
    # 60,000 changes of three apps (this one's in the middle): a page must start at the cursor in the index.
    conn.execute(
        "INSERT INTO recipient_activity (xid, app_id, recipient_id, job_id, email, status) "
        "SELECT (1000 + n)::text::xid8, %s + n %% 3 - 1, n, gen_random_uuid(), 'a@example.org', 'delivered' "
        "FROM generate_series(1, 60000) AS n", (app_id,))
    conn.execute("ANALYZE recipient_activity")
    params = {"app_id": app_id, "after_xid": "40000", "after_id": 0, "types": None, "limit": 100}
    [[plan]] = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + query("activity_page"), params).fetchone()  # type: ignore[misc]
    nodes = [node for node in _plan_nodes(plan["Plan"]) if node.get("Relation Name", "").startswith(
        "recipient_activity")]
    assert nodes and all(node["Node Type"] in {"Index Scan", "Index Only Scan"} for node in nodes), nodes
    assert all("app_id_xid_id" in node["Index Name"] for node in nodes), nodes
    assert sum(node["Actual Rows"] * node["Actual Loops"] for node in nodes) <= 101  # no scan of rows skipped


def test_retention_drops_old_months_and_an_older_cursor_goes_on_from_the_oldest_kept(client, auth, conn, settings):
    now = dt.datetime.now(dt.UTC)
    total = now.year * 12 + now.month - 1 - 13  # 13 months back: past the default 365 days
    old_month = dt.date(total // 12, total % 12 + 1, 1)
    conn.execute("SELECT mailer_ensure_month_partitions('recipient_activity', 'time', %s, %s)", (old_month, old_month))
    app = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0]  # type: ignore[index]
    conn.execute("INSERT INTO recipient_activity (xid, app_id, recipient_id, job_id, email, status, created_at) "
                 "VALUES ('5'::xid8, %s, 1, gen_random_uuid(), 'old@example.org', 'delivered', %s)",
                 (app, dt.datetime(old_month.year, old_month.month, 2, tzinfo=dt.UTC)))
    mark_sent(conn, queue(client, auth, "new@example.org"))
    first = client.get("/activity?limit=1", headers=auth).json
    assert [item["data"]["recipient"] for item in first["items"]] == ["old@example.org"]

    assert retention.drop_expired_partitions(conn, settings, now) >= 1
    assert conn.execute("SELECT to_regclass(%s)", (f"recipient_activity_p{old_month:%Y%m}",)).fetchone() == (None,)

    for cursor in (first["next_cursor"], None):  # the old change's cursor, and a walk from the start
        items, _ = walk(client, auth, cursor)
        assert [item["data"]["recipient"] for item in items] == ["new@example.org"]
