"""Dashboard sessions against real gunicorn processes (two, as the Procfile runs them) without
MAILER_SECRET_KEY: a login made on one process holds on the other, a log-out ends every copy of the cookie
on both, the cookie is Secure by default, log-in throttling counts the attempts every process saw, and
behind a trusted proxy (MAILER_TRUSTED_PROXY_HOPS) each client has its own allowance."""

from __future__ import annotations

import pathlib
import re

import pytest
import requests

from tests.e2e.conftest import running_system

pytestmark = pytest.mark.e2e

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def cookie_of(response: requests.Response) -> str:
    """The session cookie's value from a Set-Cookie header (sent by hand: requests keeps a Secure cookie for
    https only)."""
    header = response.headers["Set-Cookie"]
    assert header.startswith("mailer_dashboard="), header
    return header.split(";", 1)[0].split("=", 1)[1]


def get(url: str, cookie: str | None = None) -> requests.Response:
    # A new connection for each request: gunicorn's two processes take turns accepting them.
    headers = {"Connection": "close", **({"Cookie": f"mailer_dashboard={cookie}"} if cookie else {})}
    return requests.get(url, headers=headers, timeout=10, allow_redirects=False)


def post(url: str, cookie: str, data: dict[str, str]) -> requests.Response:
    headers = {"Connection": "close", "Cookie": f"mailer_dashboard={cookie}"}
    return requests.post(url, headers=headers, data=data, timeout=10, allow_redirects=False)


def log_in(web_url: str, token: str) -> requests.Response:
    form = get(f"{web_url}/dashboard/login")
    csrf = CSRF.search(form.text)
    assert csrf, form.text
    return post(f"{web_url}/dashboard/login", cookie_of(form), {"token": token, "csrf_token": csrf.group(1)})


def test_sessions_hold_on_every_process_and_end_on_every_process(database_url: str, tmp_path: pathlib.Path):
    env = {"MAILER_SECRET_KEY": "", "MAILER_DASHBOARD_LOGINS_PER_ADDRESS_PER_MIN": "3"}
    with running_system(database_url, tmp_path, **env) as system:
        login = log_in(system.web_url, system.api_key)  # the form from one process, the post maybe to the other
        assert login.status_code == 302, login.text
        assert "; Secure" in login.headers["Set-Cookie"] and "HttpOnly" in login.headers["Set-Cookie"]
        cookie = cookie_of(login)
        pages = [get(f"{system.web_url}/dashboard", cookie) for _ in range(12)]
        assert [page.status_code for page in pages] == [302] * 12  # the app's own page, from either process
        assert all(page.headers["Location"].startswith("/dashboard/apps/") for page in pages)
        home = get(system.web_url + pages[0].headers["Location"], cookie)
        assert home.status_code == 200

        csrf = CSRF.search(home.text)
        assert csrf
        assert post(f"{system.web_url}/dashboard/logout", cookie, {"csrf_token": csrf.group(1)}).status_code == 302
        after = [get(f"{system.web_url}/dashboard", cookie) for _ in range(6)]
        assert all(page.headers["Location"].startswith("/dashboard/login") for page in after)

        # One attempt went to the login above; two wrong ones are allowed, then 429 whichever process answers.
        wrong = [log_in(system.web_url, system.api_key[:-1] + "x").status_code for _ in range(4)]
        assert wrong == [401, 401, 429, 429]
        throttled = log_in(system.web_url, system.api_key)
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
        assert "Too many log-in attempts" in throttled.text
    web_log = (tmp_path / "web.log").read_text()
    assert web_log.count('"message":"dashboard login refused"') == 2
    assert '"client_address":"127.0.0.1"' in web_log


def log_in_as(web_url: str, token: str, client: str) -> int:
    """A log-in through a proxy that wrote `client` into X-Forwarded-For; the status of the form's post."""
    headers = {"Connection": "close", "X-Forwarded-For": client}
    form = requests.get(f"{web_url}/dashboard/login", headers=headers, timeout=10)
    csrf = CSRF.search(form.text)
    assert csrf, form.text
    posted = requests.post(
        f"{web_url}/dashboard/login", data={"token": token, "csrf_token": csrf.group(1)}, timeout=10,
        headers={**headers, "Cookie": f"mailer_dashboard={cookie_of(form)}"}, allow_redirects=False,
    )
    return posted.status_code


def test_behind_a_trusted_proxy_gunicorn_throttles_each_client_apart(database_url: str, tmp_path: pathlib.Path):
    env = {"MAILER_TRUSTED_PROXY_HOPS": "1", "MAILER_DASHBOARD_LOGINS_PER_ADDRESS_PER_MIN": "2"}
    with running_system(database_url, tmp_path, **env) as system:
        wrong = [log_in_as(system.web_url, system.api_key[:-1] + "x", "203.0.113.9") for _ in range(3)]
        assert wrong == [401, 401, 429]
        assert log_in_as(system.web_url, system.api_key, "203.0.113.10") == 302  # another client behind it
    web_log = (tmp_path / "web.log").read_text()
    assert web_log.count('"client_address":"203.0.113.9"') >= 3  # two refused, one throttled
    assert '"client_address":"127.0.0.1"' not in web_log
