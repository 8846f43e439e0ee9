"""/dashboard's activity page and replay-by-window form with the Flask client: what they show, to whom, paging,
the form's validation as the API's, and CSRF."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re

import pytest

from mailer.config import Settings
from mailer.dashboard import feed_pages
from mailer.store.queries import query
from tests.integration.conftest import make_key
from tests.integration.test_dashboard import OPERATOR, app_id_of, csrf_of, log_in
from tests.integration.test_dashboard_templates import Page
from tests.integration.webhooks_support import mark_sent, queue, register, set_status

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, operator_token=OPERATOR, secret_key="dashboard-test-secret-key", webhook_allow_private=True
    )


def changes(text: str) -> list[tuple[str, str, str]]:
    """(type, address, job link) of each row of the activity table, top to bottom."""
    page = Page(text)
    rows = [key for key in page.by_id if key.startswith("change-")]
    return [(str(page.by_id[row]["data-type"]), *_cells(page.texts[row])) for row in rows]


def _cells(text: str) -> tuple[str, str]:
    parts = [part.strip() for part in text.split("\n") if part.strip()]
    return parts[2], parts[3]  # time, type, address, job


def older_link(text: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', text)
    return html.unescape(found.group(1)) if found else None


def test_the_activity_page_lists_the_apps_changes_newest_first(client, conn, api_key) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    shop = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    billing, shop_id = app_id_of(conn, "billing"), app_id_of(conn, "shop")
    job_id = queue(client, auth, "ann@example.org")
    mark_sent(conn, job_id)
    set_status(conn, job_id, "delivered")
    mark_sent(conn, queue(client, shop, "someone@shop.example"))

    page = client.get(f"/dashboard/apps/{billing}/activity", headers=auth)
    assert page.status_code == 200
    assert changes(page.text) == [("email.delivered", "ann@example.org", job_id),
                                  ("email.sent", "ann@example.org", job_id)]
    assert f'href="/dashboard/apps/{billing}/jobs/{job_id}"' in page.text
    assert f'href="/dashboard/apps/{billing}/activity"' in page.text  # the nav links it
    assert "someone@shop.example" not in page.text

    only_sent = client.get(f"/dashboard/apps/{billing}/activity?types=email.sent", headers=auth)
    assert changes(only_sent.text) == [("email.sent", "ann@example.org", job_id)]
    bad = client.get(f"/dashboard/apps/{billing}/activity?types=email.nope&before=zzz", headers=auth)
    assert bad.status_code == 200 and "unknown type" in bad.text and len(changes(bad.text)) == 2

    assert client.get(f"/dashboard/apps/{shop_id}/activity", headers=auth).status_code == 404
    log_in(client, OPERATOR)
    assert [c[1] for c in changes(client.get(f"/dashboard/apps/{shop_id}/activity").text)] == ["someone@shop.example"]


def test_older_pages_walk_every_change_once_and_a_rare_type_costs_a_bounded_read(
    client, conn, api_key, monkeypatch
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    job_id = queue(client, auth, *(f"r{n}@example.org" for n in range(7)))
    mark_sent(conn, job_id)
    conn.execute("UPDATE recipients SET status = 'bounced' WHERE job_id = %s AND position = 0", (job_id,))
    monkeypatch.setattr(feed_pages, "ACTIVITY_PER_PAGE", 3)
    monkeypatch.setattr(feed_pages, "ACTIVITY_SCAN_ROWS", 4)

    seen: list[tuple[str, str, str]] = []
    url: str | None = f"/dashboard/apps/{billing}/activity"
    while url:
        text = client.get(url, headers=auth).text
        seen += changes(text)
        url = older_link(text)
    assert len(seen) == 8 and len(set(seen)) == 8 and seen[0] == ("email.bounced", "r0@example.org", job_id)

    # Filtered: each page reads at most 4 changes (8 here: two full reads, then an empty one ends the walk); the
    # one bounce is found on the first, the pages after it are empty.
    url, found, pages = f"/dashboard/apps/{billing}/activity?types=bounced", [], 0
    while url:
        text = client.get(url, headers=auth).text
        found += changes(text)
        url, pages = older_link(text), pages + 1
    assert found == [("email.bounced", "r0@example.org", job_id)] and pages == 3


def test_the_replay_form_starts_a_replay_as_the_api_does(client, conn, api_key) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    endpoint = register(client, auth, HOOK, ["sent", "delivered"])
    mark_sent(conn, queue(client, auth, "ann@example.org", "bob@example.org"))
    log_in(client, api_key)
    page = client.get(f"/dashboard/apps/{billing}/webhooks")
    action = f"/dashboard/apps/{billing}/webhooks/{endpoint['id']}/replay"
    assert f'action="{action}"' in page.text and 'value="email.delivered"' in page.text
    assert 'value="email.opened"' not in page.text  # only what the endpoint takes
    now = dt.datetime.now(dt.UTC)
    window = {"since": (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "until": (now + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "types": ["email.sent"]}

    assert client.post(action, data=window).status_code == 403
    assert client.post(action, data={**window, "csrf_token": "forged"}).status_code == 403
    assert conn.execute("SELECT count(*) FROM webhook_replays").fetchone() == (0,)

    done = client.post(action, data={**window, "csrf_token": csrf_of(page.text)})
    assert done.status_code == 302, done.text
    assert conn.execute("SELECT matched, statuses FROM webhook_replays").fetchall() == [(2, ["sent"])]
    shown = client.get(done.headers["Location"])
    assert "Replay " in shown.text and "2 events" in shown.text
    [row] = [key for key in Page(shown.text).by_id if key.startswith("replay-") and key != f"replays-{endpoint['id']}"]
    text = " ".join(Page(shown.text).texts[row].split())
    assert "email.sent" in text and "of 2" in text and window["since"][:16] in text

    # While it runs, another one is refused (409) on the page, as the API refuses it.
    again = client.post(action, data={**window, "csrf_token": csrf_of(page.text)})
    assert again.status_code == 409 and "still running" in again.text


def test_a_bad_window_is_shown_on_the_page_and_starts_nothing(client, conn, api_key) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    endpoint = register(client, auth, HOOK)
    log_in(client, api_key)
    csrf = csrf_of(client.get(f"/dashboard/apps/{billing}/webhooks").text)
    action = f"/dashboard/apps/{billing}/webhooks/{endpoint['id']}/replay"

    backwards = client.post(action, data={"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z",
                                          "csrf_token": csrf})
    assert backwards.status_code == 422
    error = " ".join(Page(backwards.text).texts["replay-error"].split())
    assert "the window is empty" in error and "must be later than since" in error
    assert 'value="2026-11-02T00:00:00Z"' in backwards.text  # the form as sent

    undated = client.post(action, data={"since": "yesterday", "until": "", "csrf_token": csrf})
    assert undated.status_code == 422 and "RFC 3339" in undated.text
    too_long = client.post(action, data={"since": "2020-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z",
                                         "csrf_token": csrf})
    assert too_long.status_code == 422 and "MAILER_WEBHOOK_REPLAY_MAX_DAYS" in too_long.text
    assert conn.execute("SELECT count(*) FROM webhook_replays").fetchone() == (0,)


def test_another_apps_endpoint_is_not_found(client, conn, api_key) -> None:
    other = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    theirs = register(client, other, HOOK)
    billing, shop = app_id_of(conn, "billing"), app_id_of(conn, "shop")
    log_in(client, api_key)
    csrf = csrf_of(client.get(f"/dashboard/apps/{billing}/webhooks").text)
    window = {"since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z", "csrf_token": csrf}
    assert client.post(f"/dashboard/apps/{billing}/webhooks/{theirs['id']}/replay", data=window).status_code == 404
    assert client.post(f"/dashboard/apps/{shop}/webhooks/{theirs['id']}/replay", data=window).status_code == 404
    assert client.get(f"/dashboard/apps/{shop}/webhooks").status_code == 404
    assert conn.execute("SELECT count(*) FROM webhook_replays").fetchone() == (0,)


def _plan_nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _plan_nodes(child))]


def test_a_page_reads_the_feeds_index_backwards_from_the_cursor_at_most_the_bound(conn, api_key) -> None:
    # 30,000 changes of three apps (this one's in the middle); a filtered page from the middle of the feed.
    app_id = app_id_of(conn, "billing")
    conn.execute(
        "INSERT INTO recipient_activity (xid, app_id, recipient_id, job_id, email, status) "
        "SELECT (1000 + n)::text::xid8, %s + n %% 3 - 1, n, gen_random_uuid(), 'a@example.org', 'delivered' "
        "FROM generate_series(1, 30000) AS n", (app_id,))
    conn.execute("ANALYZE recipient_activity")
    params = {"app_id": app_id, "before_xid": "20000", "before_id": 2**63 - 1, "types": ["bounced"], "limit": 51,
              "scan_limit": 500}
    [[plan]] = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + query("activity_recent"), params).fetchone()  # type: ignore[misc]
    nodes = [node for node in _plan_nodes(plan["Plan"]) if node.get("Relation Name", "").startswith(
        "recipient_activity")]
    assert nodes and all(node["Node Type"] in {"Index Scan", "Index Only Scan"} for node in nodes), nodes
    assert all("app_id_xid_id" in node["Index Name"] and node["Scan Direction"] == "Backward" for node in nodes)
    assert sum(node["Actual Rows"] * node["Actual Loops"] for node in nodes) <= 501  # the bound, from the cursor


def test_an_endpoints_latest_replays_are_read_along_its_own_index_not_among_the_apps(client, conn, api_key) -> None:
    # 30,000 finished replays on one endpoint of the app, a few on another: the page's read of the other's latest.
    auth = {"Authorization": f"Bearer {api_key}"}
    app_id = app_id_of(conn, "billing")
    busy, quiet = register(client, auth, HOOK)["id"], register(client, auth, HOOK + "/2")["id"]
    conn.execute(
        "INSERT INTO webhook_replays (endpoint_id, app_id, since, until, statuses, matched, outcome, finished_at) "
        "SELECT CASE WHEN n %% 5000 = 0 THEN %s ELSE %s END::uuid, %s, now() - interval '1 day', now(), "
        "ARRAY['sent'], 0, 'done', now() FROM generate_series(1, 30000) AS n", (quiet, busy, app_id))
    conn.execute("ANALYZE webhook_replays")
    params = {"app_id": app_id, "endpoint_id": quiet, "limit": 5}
    [[plan]] = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + query("list_webhook_replays"), params).fetchone()  # type: ignore[misc]
    nodes = [node for node in _plan_nodes(plan["Plan"]) if node.get("Relation Name") == "webhook_replays"]
    assert [(node["Node Type"], node.get("Index Name")) for node in nodes] == [
        ("Index Scan", "webhook_replays_endpoint_idx")], nodes
    assert sum(node["Actual Rows"] + node.get("Rows Removed by Filter", 0) for node in nodes) == 5


def selected(text: str) -> list[str]:
    return re.findall(r'<option value="([^"]*)"\s*selected', text)


def test_the_type_box_keeps_what_was_asked_a_list_of_types_included(client, conn, api_key) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    url = f"/dashboard/apps/{app_id_of(conn, 'billing')}/activity"
    job_id = queue(client, auth, "ann@example.org", "bob@example.org")
    mark_sent(conn, job_id)
    conn.execute("UPDATE recipients SET status = CASE position WHEN 0 THEN 'delivered' ELSE 'bounced' END "
                 "WHERE job_id = %s", (job_id,))

    two = client.get(url, query_string={"types": "sent, email.delivered"}, headers=auth).text
    assert selected(two) == ["email.sent,email.delivered"]
    # Filter sends the box's value: the same two types again, not "any".
    again = client.get(url, query_string={"types": selected(two)[0]}, headers=auth).text
    assert sorted(c[0] for c in changes(again)) == ["email.delivered", "email.sent", "email.sent"]
    assert selected(client.get(url, query_string={"types": "bounced"}, headers=auth).text) == ["email.bounced"]
    assert selected(client.get(url, headers=auth).text) == []
