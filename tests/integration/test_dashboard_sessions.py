"""Dashboard sessions on the server: log-out ends every copy of the cookie, a fixed lifetime, Secure cookies,
log-in throttling per address and in all, and one signing key for every process without MAILER_SECRET_KEY."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import flask
import psycopg
import pytest

from mailer import create_app
from mailer.config import Settings
from tests.integration.test_dashboard import OPERATOR, app_id_of, csrf_of

COOKIE = "mailer_dashboard"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # No MAILER_SECRET_KEY: the installation's own key signs the cookies. Throttling generous unless a test
    # says otherwise.
    return dataclasses.replace(settings, operator_token=OPERATOR, secret_key=None,
                               dashboard_logins_per_address_per_min=100, dashboard_logins_per_min=1000)


@pytest.fixture
def make_app(settings: Settings) -> Iterator:  # type: ignore[type-arg]
    """create_app on the test database (each call: another process, as far as the dashboard can tell)."""
    made: list[flask.Flask] = []

    def make(**changes: object) -> flask.Flask:
        made.append(create_app(dataclasses.replace(settings, **changes)))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for app in made:
        app.extensions["mailer.pool"].close()


def log_in(client: flask.testing.FlaskClient, token: str, address: str = "198.51.100.7") -> flask.Response:
    environ = {"REMOTE_ADDR": address}
    form = client.get("/dashboard/login", environ_base=environ)
    return client.post("/dashboard/login", data={"token": token, "csrf_token": csrf_of(form.text)},
                       environ_base=environ)


def session_cookie(client: flask.testing.FlaskClient) -> str:
    cookie = client.get_cookie(COOKIE, path="/dashboard")
    assert cookie is not None
    return cookie.value


def copy_of(app: flask.Flask, cookie: str) -> flask.testing.FlaskClient:
    """Another browser (or a thief) holding the same cookie."""
    other = app.test_client()
    other.set_cookie(COOKIE, cookie, path="/dashboard")
    return other


def test_a_cookie_copied_before_log_out_is_refused_after_it(client, conn, api_key):
    billing = f"/dashboard/apps/{app_id_of(conn, 'billing')}"
    for token in (api_key, OPERATOR):
        assert log_in(client, token).status_code == 302
        stolen = copy_of(client.application, session_cookie(client))
        page = client.get(billing)
        assert page.status_code == 200 and stolen.get(billing).status_code == 200

        assert client.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 302
        assert stolen.get(billing).status_code == 302, token  # to the login form
        assert conn.execute("SELECT count(*) FROM dashboard_sessions").fetchone() == (0,)


def test_a_session_ends_its_lifetime_after_the_log_in_whatever_it_does(make_app, conn, api_key):
    lifetime = 4.0
    app = make_app(dashboard_session_lifetime_s=lifetime)
    client = app.test_client()
    billing = f"/dashboard/apps/{app_id_of(conn, 'billing')}"
    started = time.monotonic()
    login = log_in(client, api_key)
    assert login.status_code == 302
    created, expires = conn.execute("SELECT created_at, expires_at FROM dashboard_sessions").fetchone()
    assert (expires - created).total_seconds() == pytest.approx(lifetime, abs=0.01)
    while time.monotonic() - started < lifetime - 1.5:
        page = client.get(billing)
        assert page.status_code == 200
        assert "Set-Cookie" not in page.headers  # no response sends the browser a later end
        time.sleep(0.5)
    assert conn.execute("SELECT expires_at FROM dashboard_sessions").fetchone() == (expires,)
    time.sleep(max(0.0, lifetime + 0.5 - (time.monotonic() - started)))
    assert client.get(billing).status_code == 302


def test_the_session_cookie_is_secure_http_only_and_strict_by_default(make_app, api_key):
    assert Settings().dashboard_cookie_secure is True
    cookie = log_in(make_app().test_client(), api_key).headers["Set-Cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    plain = log_in(make_app(dashboard_cookie_secure=False).test_client(), api_key).headers["Set-Cookie"]
    assert "Secure" not in plain and "HttpOnly" in plain and "SameSite=Strict" in plain


def test_without_a_secret_key_every_process_signs_with_the_same_key(make_app, conn, api_key):
    first, second = make_app(), make_app()
    billing = f"/dashboard/apps/{app_id_of(conn, 'billing')}"
    client = first.test_client()
    assert log_in(client, OPERATOR).status_code == 302
    elsewhere = copy_of(second, session_cookie(client))
    page = elsewhere.get(billing)
    assert page.status_code == 200  # the other process accepts the cookie

    assert elsewhere.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 302
    assert client.get(billing).status_code == 302  # and its log-out holds in the first one
    assert conn.execute("SELECT count(*) FROM instance_keys WHERE name = 'dashboard-session'").fetchone() == (1,)


def test_api_requests_never_read_the_session_key(make_app, conn, api_key):
    client = make_app().test_client()
    queued = client.post("/queue", headers={"Authorization": f"Bearer {api_key}"},
                         json={"from": {"email": "a@example.com"}, "to": [{"email": "b@example.org"}],
                               "subject": "s", "text": "t"})
    assert queued.status_code == 202
    assert conn.execute("SELECT count(*) FROM instance_keys WHERE name = 'dashboard-session'").fetchone() == (0,)


def test_log_ins_are_throttled_per_client_address(make_app, api_key, caplog):
    client = make_app(dashboard_logins_per_address_per_min=3).test_client()
    with caplog.at_level(logging.WARNING, logger="mailer.dashboard.access"):
        for _ in range(3):
            assert log_in(client, api_key[:-1] + "x", address="203.0.113.9").status_code == 401
        throttled = log_in(client, api_key, address="203.0.113.9")  # even the right key, now
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 20  # one attempt comes back every 20 s
    assert "text/html" in throttled.content_type and "Too many log-in attempts from your address" in throttled.text
    assert log_in(client, api_key, address="203.0.113.10").status_code == 302  # another address is not held

    refused = [record for record in caplog.records if record.getMessage() == "dashboard login refused"]
    assert [record.client_address for record in refused] == ["203.0.113.9"] * 3  # type: ignore[attr-defined]
    assert any(getattr(record, "client_address", None) == "203.0.113.9" and "throttled" in record.getMessage()
               for record in caplog.records)


def test_log_ins_are_throttled_in_all_across_processes(make_app, api_key):
    first, second = (make_app(dashboard_logins_per_min=4).test_client() for _ in range(2))
    for number in range(4):
        client = (first, second)[number % 2]
        assert log_in(client, api_key[:-1] + "x", address=f"192.0.2.{number}").status_code == 401
    for client in (first, second):
        throttled = log_in(client, api_key, address="192.0.2.200")
        assert throttled.status_code == 429 and "in all" in throttled.text
        assert int(throttled.headers["Retry-After"]) >= 1


def test_an_address_held_back_does_not_use_up_the_global_allowance(make_app, api_key):
    client = make_app(dashboard_logins_per_address_per_min=2, dashboard_logins_per_min=5).test_client()
    for _ in range(20):
        log_in(client, api_key[:-1] + "x", address="203.0.113.66")
    assert log_in(client, api_key, address="203.0.113.67").status_code == 302


def test_idle_log_in_buckets_and_expired_sessions_are_removed_at_a_log_in(client, conn, api_key):
    conn.execute("INSERT INTO rate_limit_buckets (key, tokens, updated_at, granted) VALUES "
                 "('dashboard-login:203.0.113.1', 0, now() - interval '2 minutes', false), "
                 "('dashboard-login:203.0.113.2', 0, now(), false), "
                 "('app:1', 0, now() - interval '2 minutes', false)")
    conn.execute("INSERT INTO dashboard_sessions (id_hash, expires_at) VALUES (%s, now() - interval '1 s')",
                 (b"\x01" * 32,))
    assert log_in(client, api_key, address="203.0.113.3").status_code == 302
    keys = {row[0] for row in conn.execute("SELECT key FROM rate_limit_buckets")}
    assert keys == {"dashboard-login:203.0.113.2", "dashboard-login:203.0.113.3", "dashboard-login:*", "app:1"}
    assert conn.execute("SELECT count(*) FROM dashboard_sessions WHERE expires_at < now()").fetchone() == (0,)


def test_a_session_row_alone_is_no_login(client, conn: psycopg.Connection, api_key):
    # A cookie the server never made (not signed with its key) opens nothing, even with a session id.
    client.set_cookie(COOKIE, "eyJzaWQiOiJ4In0.forged.signature", path="/dashboard")
    assert client.get("/dashboard").status_code == 302


def test_bearer_guesses_on_the_dashboard_are_throttled_like_log_ins(make_app, conn, api_key, caplog):
    client = make_app(dashboard_logins_per_address_per_min=3).test_client()
    page = f"/dashboard/apps/{app_id_of(conn, 'billing')}"
    address = {"REMOTE_ADDR": "203.0.113.77"}
    with caplog.at_level(logging.WARNING, logger="mailer.dashboard.access"):
        for guess in range(3):
            wrong = {"Authorization": f"Bearer operator-token-guess-{guess:04d}"}
            assert client.get(page, headers=wrong, environ_base=address).status_code == 401
    # Now even the right operator token is refused from that address, before it is compared.
    right = {"Authorization": f"Bearer {OPERATOR}"}
    throttled = client.get(page, headers=right, environ_base=address)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert client.get(page, headers=right, environ_base={"REMOTE_ADDR": "203.0.113.78"}).status_code == 200
    assert [getattr(record, "client_address", None) for record in caplog.records
            if record.getMessage() == "dashboard login refused"] == ["203.0.113.77"] * 3


def test_a_scripts_good_bearer_token_takes_nothing_from_the_log_in_allowance(make_app, conn, api_key):
    client = make_app(dashboard_logins_per_address_per_min=2).test_client()
    page = f"/dashboard/apps/{app_id_of(conn, 'billing')}"
    for token in [OPERATOR, api_key] * 5:
        assert client.get(page, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert conn.execute("SELECT count(*) FROM rate_limit_buckets WHERE key LIKE 'dashboard-login:%'").fetchone() == (0,)


def log_in_through_proxy(client: flask.testing.FlaskClient, token: str, forwarded_for: str) -> flask.Response:
    """A log-in through a reverse proxy at 10.0.0.2 that appends the client's address to X-Forwarded-For."""
    environ, headers = {"REMOTE_ADDR": "10.0.0.2"}, {"X-Forwarded-For": forwarded_for}
    form = client.get("/dashboard/login", environ_base=environ, headers=headers)
    return client.post("/dashboard/login", data={"token": token, "csrf_token": csrf_of(form.text)},
                       environ_base=environ, headers=headers)


def test_behind_a_trusted_proxy_each_client_has_its_own_log_in_allowance(make_app, api_key, caplog):
    client = make_app(dashboard_logins_per_address_per_min=2, trusted_proxy_hops=1).test_client()
    with caplog.at_level(logging.WARNING, logger="mailer.dashboard.access"):
        for forged in ("192.0.2.1", "192.0.2.2"):  # what a client writes itself is left of the proxy's entry
            assert log_in_through_proxy(client, api_key[:-1] + "x", f"{forged}, 203.0.113.9").status_code == 401
        assert log_in_through_proxy(client, api_key, "203.0.113.9").status_code == 429
    assert log_in_through_proxy(client, api_key, "203.0.113.10").status_code == 302  # another client: not held
    refused = [record for record in caplog.records if record.getMessage() == "dashboard login refused"]
    assert [record.client_address for record in refused] == ["203.0.113.9"] * 2  # type: ignore[attr-defined]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(make_app, api_key):
    client = make_app(dashboard_logins_per_address_per_min=2).test_client()
    for number in range(2):
        assert log_in_through_proxy(client, api_key[:-1] + "x", f"203.0.113.{number}").status_code == 401
    # every client through the proxy is one address, the proxy's (what MAILER_TRUSTED_PROXY_HOPS is for)
    assert log_in_through_proxy(client, api_key, "203.0.113.50").status_code == 429


def test_a_log_in_over_an_earlier_session_ends_that_session(client, conn, api_key):
    billing = f"/dashboard/apps/{app_id_of(conn, 'billing')}"
    assert log_in(client, api_key).status_code == 302
    earlier = copy_of(client.application, session_cookie(client))
    assert earlier.get(billing).status_code == 200

    assert log_in(client, OPERATOR).status_code == 302  # the same browser logs in again

    assert client.get(billing).status_code == 200
    assert earlier.get(billing).status_code == 302  # the earlier session's cookie: to the login form
    assert conn.execute("SELECT count(*) FROM dashboard_sessions").fetchone() == (1,)


def test_log_out_needs_the_forms_csrf_token(client, conn, api_key):
    billing = f"/dashboard/apps/{app_id_of(conn, 'billing')}"
    assert log_in(client, api_key).status_code == 302
    for forged in ({}, {"csrf_token": "guessed"}):
        refused = client.post("/dashboard/logout", data=forged)
        assert refused.status_code == 403 and "did not come from the dashboard" in refused.text
        assert client.get(billing).status_code == 200  # still logged in
    page = client.get(billing)
    assert client.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 302
    assert client.get(billing).status_code == 302
