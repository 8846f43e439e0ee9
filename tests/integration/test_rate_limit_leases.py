"""The per-app request limit's leases: a web process takes several tokens at once, and the limit still holds."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import time
import uuid
from typing import Any

import flask
import psycopg
import pytest

from mailer import store
from mailer.config import Settings
from mailer.domain import errors
from mailer.services import rate_limits
from mailer.store import _run
from tests.integration.conftest import app_with, make_key


def message(to: str = "ann@example.org") -> dict[str, Any]:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": to}], "subject": "Invoice", "text": "hi"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def lease(conn: psycopg.Connection, want: int, returned: int = 0, rate: float = 0.001, burst: float = 10) -> Any:
    return store.lease_rate_limit_tokens(conn, key="k", rate_per_s=rate, burst=burst, want=want, returned=returned)


def tokens(conn: psycopg.Connection, key: str = "k") -> float:
    row = conn.execute("SELECT tokens FROM rate_limit_buckets WHERE key = %s", (key,)).fetchone()
    assert row is not None
    return float(row[0])


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """The named queries run from now on, counted by name (they still run against the database)."""
    ran: collections.Counter[str] = collections.Counter()
    real = _run.all_rows

    def counting(conn: psycopg.Connection, query_name: str, /, **params: Any) -> list[dict[str, Any]]:
        ran[query_name] += 1
        return real(conn, query_name, **params)

    monkeypatch.setattr(_run, "all_rows", counting)
    return ran


def bucket_statements(ran: collections.Counter[str]) -> int:
    return ran["take_rate_limit_tokens"] + ran["lease_rate_limit_tokens"]


# --- the lease statement ------------------------------------------------------------------------


def test_a_lease_takes_what_it_wants_from_a_new_bucket_which_starts_full(conn) -> None:
    assert lease(conn, want=4).taken == 4
    assert tokens(conn) == pytest.approx(6, abs=0.01)


def test_a_lease_takes_as_many_whole_tokens_as_there_are_and_then_none_with_the_wait_for_one(conn) -> None:
    assert lease(conn, want=8, rate=2).taken == 8
    assert lease(conn, want=8, rate=2).taken == 2  # the two left (and the sliver refilled meanwhile stays)
    refused = lease(conn, want=3, rate=2)
    assert refused.taken == 0
    assert 0 < refused.retry_after_s <= 0.5  # one token at 2 a second, less what refilled meanwhile
    assert 0 <= tokens(conn) < 1


def test_returned_tokens_can_be_taken_again_but_never_fill_the_bucket_past_its_burst(conn) -> None:
    assert lease(conn, want=10).taken == 10
    assert lease(conn, want=3, returned=3).taken == 3  # what was given back in the same statement
    assert lease(conn, want=10, returned=100).taken == 10  # capped at the burst
    assert lease(conn, want=1).taken == 0


# --- how a process leases -----------------------------------------------------------------------


class Clock:
    """A time.monotonic() that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wants(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(want, returned) of every lease statement from now on (they still run against the database)."""
    seen: list[tuple[int, int]] = []
    real = store.lease_rate_limit_tokens

    def recording(conn: psycopg.Connection, **params: Any) -> Any:
        seen.append((params["want"], params["returned"]))
        return real(conn, **params)

    monkeypatch.setattr(store, "lease_rate_limit_tokens", recording)
    return seen


def slow_bucket(settings: Settings, clock: Clock) -> rate_limits.RequestLimit:
    """Burst 10 with next to no refill, leases that last until the clock moves (at most 10 tokens each)."""
    return rate_limits.RequestLimit(
        dataclasses.replace(settings, rate_limit_per_s=0.001, rate_limit_burst=10, rate_limit_lease_ms=10**9), clock
    )


def test_leases_double_while_they_run_out_early_then_shrink_to_one_token_near_the_limit(settings, conn, wants) -> None:
    limit = slow_bucket(settings, Clock())
    for _ in range(10):
        limit.take(conn, 7)
    with pytest.raises(errors.RateLimited):
        limit.take(conn, 7)

    # 1 + 2 + 4 granted whole; 8 asked of the 3 left; then one at a time, and none is left.
    assert wants == [(1, 0), (2, 0), (4, 0), (8, 0), (1, 0)]
    assert tokens(conn, "app:7") < 0.01


def test_what_a_lease_leaves_when_it_ends_goes_back_with_the_next_take(settings, conn, wants) -> None:
    clock = Clock()
    limit = slow_bucket(settings, clock)
    limit.take(conn, 7)
    limit.take(conn, 7)  # a lease of 2: one held
    clock.now += 10**6 + 1  # the lease has ended, its token unspent
    assert not limit.take_held(7)
    limit.take(conn, 7)

    # The ended lease served one request: one is asked for, and its unspent token given back.
    assert wants == [(1, 0), (2, 0), (1, 1)]
    assert tokens(conn, "app:7") == pytest.approx(10 - 1 - 2 + 1 - 1, abs=0.01)


def test_leases_are_per_app(settings, conn, wants) -> None:
    limit = slow_bucket(settings, Clock())
    limit.take(conn, 7)
    limit.take(conn, 7)  # one of app 7 held
    limit.take(conn, 8)

    assert wants == [(1, 0), (2, 0), (1, 0)]
    assert limit.take_held(7)
    assert not limit.take_held(8)


# --- leases in a web process --------------------------------------------------------------------


def test_single_posts_from_one_process_spend_leased_tokens_instead_of_a_bucket_statement_each(
    settings, conn, statements
) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=1000, rate_limit_burst=1000, rate_limit_lease_ms=1000) as app:
        client = app.test_client()
        codes = [client.post("/queue", json=message(), headers=bearer(key)).status_code for _ in range(60)]

    assert codes == [202] * 60
    assert statements["insert_jobs"] == 60
    # Leases of 1, 2, 4, 8, 16, 32 tokens while they run out within their second: 6 statements for 60 requests
    # (one each before leases). The margin is for a box so slow that a lease ends before it is spent.
    assert bucket_statements(statements) <= 20


def test_a_lease_of_zero_ms_is_a_statement_per_request(settings, conn, statements) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=1000, rate_limit_burst=1000, rate_limit_lease_ms=0) as app:
        client = app.test_client()
        codes = [client.post("/queue", json=message(), headers=bearer(key)).status_code for _ in range(10)]

    assert codes == [202] * 10
    assert bucket_statements(statements) == 10


def test_at_low_rates_each_request_takes_its_own_token(settings, conn, statements) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=1, rate_limit_burst=3, rate_limit_lease_ms=1000) as app:
        client = app.test_client()
        codes = [client.post("/queue", json=message(), headers=bearer(key)).status_code for _ in range(4)]

    assert codes == [202, 202, 202, 429]  # 1 a second x 1 s is less than two tokens: nothing leased ahead
    assert bucket_statements(statements) == 4


def test_a_key_revoked_while_its_process_holds_leased_tokens_is_401_not_accepted(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=1000, rate_limit_burst=1000, rate_limit_lease_ms=1000) as app:
        client = app.test_client()
        for _ in range(4):  # the lease grows past what these spend
            assert client.post("/queue", json=message(), headers=bearer(key)).status_code == 202
        conn.execute("UPDATE apps SET revoked_at = now()")
        refused = client.post("/queue", json=message(), headers=bearer(key))
        status = client.get(f"/status/{uuid.uuid4()}", headers=bearer(key))

    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "unauthorized"
    assert status.status_code == 401
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (4,)


def test_an_app_over_its_limit_is_429_with_retry_after_when_no_lease_is_left(settings, conn) -> None:
    key = make_key(conn, "billing")
    with app_with(settings, rate_limit_per_s=5, rate_limit_burst=6, rate_limit_lease_ms=1000) as app:
        client = app.test_client()
        began = time.monotonic()
        # 5 a second x 1 s: leases of up to 5 tokens, yet no more than the burst passes at once.
        codes = [client.post("/queue", json=message(), headers=bearer(key)).status_code for _ in range(10)]
        elapsed = time.monotonic() - began
        limited = client.post("/queue", json=message(), headers=bearer(key))

    assert codes.count(202) <= 6 + 5 * elapsed  # the burst, and what refilled while the requests ran
    assert 429 in codes
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json["error"]["details"] == {"limit_per_s": 5, "burst": 6, "retry_after_s": 1}


def test_processes_that_lease_never_pass_more_than_the_bucket_grants(settings, conn, statements) -> None:
    # Three web apps, each with its own pool and leases, as three gunicorn processes (or machines) would be.
    rate, burst, duration = 100.0, 10, 1.5
    limits = {"rate_limit_per_s": rate, "rate_limit_burst": burst, "rate_limit_lease_ms": 200}
    key = make_key(conn, "billing")
    codes: list[int] = []
    lock = threading.Lock()
    stack = contextlib.ExitStack()
    apps = [stack.enter_context(app_with(settings, **limits)) for _ in range(3)]
    start = threading.Barrier(len(apps) * 2)

    def hammer(app: flask.Flask) -> None:
        client = app.test_client()
        start.wait()
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            code = client.get(f"/status/{uuid.uuid4()}", headers=bearer(key)).status_code
            with lock:
                codes.append(code)

    with stack:
        began = time.monotonic()  # before the bucket's first take
        for app in apps:  # each process's first lookup of the key
            assert app.test_client().get(f"/status/{uuid.uuid4()}", headers=bearer(key)).status_code == 404
        threads = [threading.Thread(target=hammer, args=(app,)) for app in apps for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - began

    passed = codes.count(404) + len(apps)
    assert set(codes) <= {404, 429}
    assert passed <= burst + rate * elapsed  # the bucket's bound, whatever each process leased
    assert codes.count(429) > 0  # the limit was really reached
    assert passed >= rate * duration * 0.5  # and tokens held by one process did not starve the others for long
    assert bucket_statements(statements) < len(codes) + len(apps)  # and leases spared statements
