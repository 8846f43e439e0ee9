"""/dashboard with the Flask client: login, who sees what, the pages, and CSRF on the replay form."""

from __future__ import annotations

import dataclasses
import re

import flask
import psycopg
import pytest

from mailer.config import Settings
from mailer.services import apps
from tests.integration.conftest import make_key
from tests.integration.webhooks_support import expand, mark_sent, queue, register

OPERATOR = "operator-token-for-tests-0123"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, operator_token=OPERATOR, secret_key="dashboard-test-secret-key", webhook_allow_private=True
    )


@pytest.fixture
def other_key(conn: psycopg.Connection) -> str:
    return make_key(conn, "shop")


def app_id_of(conn: psycopg.Connection, name: str) -> int:
    return int(conn.execute("SELECT id FROM apps WHERE name = %s", (name,)).fetchone()[0])  # type: ignore[index]


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, html
    return match.group(1)


def log_in(client: flask.testing.FlaskClient, token: str, next_page: str = "") -> flask.Response:
    form = client.get("/dashboard/login")
    return client.post(
        "/dashboard/login", data={"token": token, "csrf_token": csrf_of(form.text), "next": next_page}
    )


def test_every_page_needs_a_login(client, conn, api_key):
    app_id = app_id_of(conn, "billing")
    for path in ("/dashboard", f"/dashboard/apps/{app_id}", f"/dashboard/apps/{app_id}/jobs",
                 f"/dashboard/apps/{app_id}/suppressions", f"/dashboard/apps/{app_id}/webhooks"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/dashboard/login?next=")
    replay = client.post(f"/dashboard/apps/{app_id}/webhooks/00000000-0000-0000-0000-000000000000/deliveries/1/replay")
    assert replay.status_code == 401
    assert "text/html" in replay.content_type


def test_the_login_form_sets_a_strict_http_only_session_cookie(client, conn, api_key):
    response = log_in(client, OPERATOR)
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("mailer_dashboard=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert OPERATOR not in cookie


def test_only_a_request_with_the_session_cookie_builds_a_signer(app, client, monkeypatch, api_key):
    log_in(client, OPERATOR)
    signers = []
    original = type(app.session_interface).get_signing_serializer
    monkeypatch.setattr(type(app.session_interface), "get_signing_serializer",
                        lambda self, flask_app: signers.append(1) or original(self, flask_app))
    assert client.get("/dashboard").status_code == 200  # the cookie still opens the session
    assert signers
    signers.clear()
    queued = client.post("/queue", headers={"Authorization": f"Bearer {api_key}"},
                         json={"from": {"email": "a@example.com"}, "to": [{"email": "b@example.org"}],
                               "subject": "s", "text": "t"})
    assert queued.status_code == 202 and signers == []  # the API: no cookie of ours (its path is /dashboard)


def test_a_login_needs_the_forms_csrf_token(client):
    client.get("/dashboard/login")
    refused = client.post("/dashboard/login", data={"token": OPERATOR})
    assert refused.status_code == 403
    assert client.get("/dashboard").status_code == 302  # still logged out


def test_a_wrong_token_shows_the_form_again(client, api_key):
    response = log_in(client, "operator-token-for-tests-0124")
    assert response.status_code == 401
    assert "neither the operator token nor a valid app key" in response.text
    assert log_in(client, api_key[:-1] + "x").status_code == 401


def test_the_operator_sees_every_app(client, conn, api_key, other_key):
    billing, shop = app_id_of(conn, "billing"), app_id_of(conn, "shop")
    queue(client, {"Authorization": f"Bearer {other_key}"})
    log_in(client, OPERATOR)
    overview = client.get("/dashboard")
    assert overview.status_code == 200
    assert f"/dashboard/apps/{billing}" in overview.text and f"/dashboard/apps/{shop}" in overview.text
    assert client.get(f"/dashboard/apps/{shop}/jobs").status_code == 200
    assert client.get(f"/dashboard/apps/{billing}/jobs").status_code == 200
    assert client.get("/dashboard/apps/999999").status_code == 404


def test_an_app_key_sees_only_its_own_app(client, conn, api_key, other_key):
    billing, shop = app_id_of(conn, "billing"), app_id_of(conn, "shop")
    shop_job = queue(client, {"Authorization": f"Bearer {other_key}"})
    own_job = queue(client, {"Authorization": f"Bearer {api_key}"})
    response = log_in(client, api_key, next_page=f"/dashboard/apps/{billing}/jobs")
    assert response.headers["Location"] == f"/dashboard/apps/{billing}/jobs"
    assert client.get("/dashboard").headers["Location"] == f"/dashboard/apps/{billing}"
    jobs = client.get(f"/dashboard/apps/{billing}/jobs")
    assert own_job in jobs.text and shop_job not in jobs.text
    for path in (f"/dashboard/apps/{shop}", f"/dashboard/apps/{shop}/jobs", f"/dashboard/apps/{shop}/jobs/{shop_job}",
                 f"/dashboard/apps/{billing}/jobs/{shop_job}", f"/dashboard/apps/{shop}/webhooks",
                 f"/dashboard/apps/{shop}/suppressions"):
        assert client.get(path).status_code == 404, path


def test_scripts_send_a_bearer_token_instead(client, conn, api_key, other_key):
    billing, shop = app_id_of(conn, "billing"), app_id_of(conn, "shop")
    as_app = {"Authorization": f"Bearer {api_key}"}
    assert client.get(f"/dashboard/apps/{billing}/jobs", headers=as_app).status_code == 200
    assert client.get(f"/dashboard/apps/{shop}/jobs", headers=as_app).status_code == 404
    as_operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert client.get(f"/dashboard/apps/{shop}/jobs", headers=as_operator).status_code == 200
    assert client.get("/dashboard", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_home_shows_todays_counters_and_a_14_day_chart(client, conn, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    queue(client, auth)
    queue(client, auth)
    page = client.get(f"/dashboard/apps/{app_id_of(conn, 'billing')}", headers=auth)
    assert page.status_code == 200
    assert re.search(r'id="today-created"><b>2</b>', page.text)
    assert page.text.count("<rect ") == 14 * 3 + 14 * 4  # jobs: created, sent, failed; recipients: four kinds
    assert "2 created</title>" in page.text


def test_the_job_list_filters_like_logs_and_links_to_each_job(client, conn, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    ann = queue(client, auth, "ann@example.org", metadata={"order_id": 1001})
    bob = queue(client, auth, "bob@example.org")
    everything = client.get(f"/dashboard/apps/{billing}/jobs", headers=auth).text
    assert ann in everything and bob in everything
    assert f'href="/dashboard/apps/{billing}/jobs/{ann}"' in everything
    only_bob = client.get(f"/dashboard/apps/{billing}/jobs?recipient=bob@example.org&status=", headers=auth).text
    assert bob in only_bob and ann not in only_bob
    by_metadata = client.get(f"/dashboard/apps/{billing}/jobs?metadata.order_id=1001", headers=auth).text
    assert ann in by_metadata and bob not in by_metadata
    assert bob not in client.get(f"/dashboard/apps/{billing}/jobs?status=sent", headers=auth).text
    refreshing = client.get(f"/dashboard/apps/{billing}/jobs?refresh=1", headers=auth).text
    assert 'http-equiv="refresh"' in refreshing
    bad = client.get(f"/dashboard/apps/{billing}/jobs?since=yesterday&stauts=x", headers=auth)
    assert bad.status_code == 200
    assert "The filters are not valid" in bad.text and "since" in bad.text and "stauts" in bad.text


def test_one_page_walks_to_the_next_with_the_same_filters(client, conn, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    ids = [queue(client, auth) for _ in range(3)]
    first = client.get(f"/dashboard/apps/{billing}/jobs?limit=2", headers=auth).text
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older
    second = client.get(older.group(1).replace("&amp;", "&"), headers=auth).text
    assert ids[0] in second and ids[2] not in second


def test_the_job_page_shows_recipients_the_timeline_and_the_request_id(client, conn, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    job_id = client.post(
        "/queue", json={"from": {"email": "a@example.com"}, "to": [{"email": "ann@example.org"}],
                        "cc": [{"email": "cy@example.org"}], "subject": "Hi", "text": "x"},
        headers={**auth, "X-Request-Id": "req-dash-1"},
    ).json["id"]
    page = client.get(f"/dashboard/apps/{billing}/jobs/{job_id}", headers=auth)
    assert page.status_code == 200
    assert "ann@example.org" in page.text and "cy@example.org" in page.text
    assert 'id="request-id">req-dash-1<' in page.text
    assert re.search(r'<td>queued</td>', page.text)
    assert client.get(f"/dashboard/apps/{billing}/jobs/not-a-uuid", headers=auth).status_code == 404


def test_the_suppressions_page_lists_the_apps_list(client, conn, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    client.post("/suppressions", json={"email": "gone@example.org", "reason": "asked", "scope": "bulk"}, headers=auth)
    page = client.get(f"/dashboard/apps/{app_id_of(conn, 'billing')}/suppressions", headers=auth)
    assert "gone@example.org" in page.text and "asked" in page.text
    assert "<td>bulk</td>" in page.text  # issue 22: the scope of each entry
    bad = client.get(f"/dashboard/apps/{app_id_of(conn, 'billing')}/suppressions?cursor=zzz", headers=auth)
    assert bad.status_code == 200 and "not valid" in bad.text


def test_the_replay_button_is_a_post_form_that_needs_the_csrf_token(client, conn, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    endpoint = register(client, auth, "http://127.0.0.1:9/hook")
    job_id = queue(client, auth)
    mark_sent(conn, job_id)  # the outbox trigger queues one change; its expansion makes one delivery
    expand(conn)
    delivery_id = conn.execute("SELECT id FROM webhook_deliveries").fetchone()[0]  # type: ignore[index]
    conn.execute("UPDATE webhook_deliveries SET status = 'failed'")

    log_in(client, api_key)
    page = client.get(f"/dashboard/apps/{billing}/webhooks")
    assert page.status_code == 200
    assert "http://127.0.0.1:9/hook" in page.text and "email.sent" in page.text
    action = f"/dashboard/apps/{billing}/webhooks/{endpoint['id']}/deliveries/{delivery_id}/replay"
    assert f'action="{action}"' in page.text

    assert client.post(action).status_code == 403
    assert client.post(action, data={"csrf_token": "forged"}).status_code == 403
    assert conn.execute("SELECT status FROM webhook_deliveries").fetchone()[0] == "failed"  # type: ignore[index]

    done = client.post(action, data={"csrf_token": csrf_of(page.text)})
    assert done.status_code == 302 and done.headers["Location"] == f"/dashboard/apps/{billing}/webhooks"
    assert conn.execute("SELECT status FROM webhook_deliveries").fetchone()[0] == "pending"  # type: ignore[index]
    assert "will be sent again now" in client.get(done.headers["Location"]).text


def test_a_script_replays_with_its_bearer_token_and_no_csrf_token(client, conn, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    billing = app_id_of(conn, "billing")
    endpoint = register(client, auth, "http://127.0.0.1:9/hook")
    mark_sent(conn, queue(client, auth))
    expand(conn)
    delivery_id = conn.execute("SELECT id FROM webhook_deliveries").fetchone()[0]  # type: ignore[index]
    action = f"/dashboard/apps/{billing}/webhooks/{endpoint['id']}/deliveries/{delivery_id}/replay"
    assert client.post(action, headers=auth).status_code == 302


def test_logging_out_or_rotating_the_key_ends_the_session(client, conn, api_key):
    billing = app_id_of(conn, "billing")
    log_in(client, api_key)
    page = client.get(f"/dashboard/apps/{billing}")
    assert page.status_code == 200
    assert client.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 302
    assert client.get(f"/dashboard/apps/{billing}").status_code == 302

    log_in(client, api_key)
    assert client.get(f"/dashboard/apps/{billing}").status_code == 200
    apps.rotate_key(conn, "billing")
    assert client.get(f"/dashboard/apps/{billing}").status_code == 302


def test_the_next_page_after_login_stays_on_the_dashboard(client, api_key):
    for target in ("//evil.example/x", "https://evil.example/", "/logs", "/dashboard\\@evil"):
        assert log_in(client, OPERATOR, next_page=target).headers["Location"] == "/dashboard", target


def test_pages_are_not_cached_framed_or_scripted(client, conn, api_key):
    page = client.get(f"/dashboard/apps/{app_id_of(conn, 'billing')}", headers={"Authorization": f"Bearer {api_key}"})
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script runs
    assert "<script" not in page.text


def test_without_an_operator_token_only_app_keys_log_in(app, client, api_key):
    app.extensions["mailer.settings"] = dataclasses.replace(app.extensions["mailer.settings"], operator_token=None)
    assert log_in(client, OPERATOR).status_code == 401
    assert log_in(client, api_key).status_code == 302


def test_a_proxys_basic_auth_header_leaves_the_session_in_charge(client, conn, api_key):
    billing = app_id_of(conn, "billing")
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert client.get(f"/dashboard/apps/{billing}", headers=basic).status_code == 302  # to the login form
    log_in(client, api_key)
    assert client.get(f"/dashboard/apps/{billing}", headers=basic).status_code == 200


def test_test_apps_and_their_jobs_are_marked_as_such(client, conn, api_key):
    _, test_key = apps.create_app(conn, "sandbox", test=True)
    test_job = queue(client, {"Authorization": f"Bearer {test_key}"})
    live_job = queue(client, {"Authorization": f"Bearer {api_key}"})
    test_id, live_id = app_id_of(conn, "sandbox"), app_id_of(conn, "billing")
    log_in(client, OPERATOR)

    listing = client.get("/dashboard").text
    rows = {name: row for row in listing.split("<tr>") for name in ("sandbox", "billing") if f">{name}</a>" in row}
    assert 'class="test-mode"' in rows["sandbox"]
    assert 'class="test-mode"' not in rows["billing"]
    for page in ("", "/jobs", "/webhooks"):
        path = f"/dashboard/apps/{test_id}{page}"
        assert 'id="test-mode"' in client.get(path).text, path
    assert 'id="job-test"' in client.get(f"/dashboard/apps/{test_id}/jobs/{test_job}").text
    assert 'id="test-mode"' not in client.get(f"/dashboard/apps/{live_id}").text
    assert 'id="job-test"' not in client.get(f"/dashboard/apps/{live_id}/jobs/{live_job}").text
