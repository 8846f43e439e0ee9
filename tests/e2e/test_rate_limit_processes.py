"""The per-app request limit holds across gunicorn's worker processes: its state is in Postgres."""

from __future__ import annotations

import concurrent.futures
import pathlib
import time

import psycopg
import pytest
import requests

from tests.e2e.conftest import running_system

pytestmark = pytest.mark.e2e

RATE, BURST, REQUESTS = 5, 5, 30


@pytest.mark.parametrize(
    ("rate", "burst", "lease_ms", "requests_made"),
    [
        (RATE, BURST, 100, REQUESTS),  # too slow a rate to lease: one token per request
        (50, 10, 200, 300),  # each process leases up to 10 tokens at once
    ],
)
def test_the_request_limit_is_one_for_all_gunicorn_processes(
    database_url: str, tmp_path: pathlib.Path, rate: int, burst: int, lease_ms: int, requests_made: int
) -> None:
    with running_system(
        database_url, tmp_path, MAILER_RATE_LIMIT_PER_S=str(rate), MAILER_RATE_LIMIT_BURST=str(burst),
        MAILER_RATE_LIMIT_LEASE_MS=str(lease_ms),
    ) as system:
        body = {"from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Hi",
                "text": "Thanks"}

        def post(_: int) -> requests.Response:
            return requests.post(f"{system.web_url}/queue", json=body, headers=system.auth, timeout=10)

        began = time.monotonic()
        # 8 at once: gunicorn runs 2 processes of 4 threads, so both processes take requests.
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(post, range(requests_made)))
        elapsed = time.monotonic() - began

    codes = [answer.status_code for answer in answers]
    accepted = codes.count(202)
    assert set(codes) <= {202, 429}, codes
    # Two processes each with its own limit would let up to twice the burst through at once; tokens a process
    # leased come out of the one bucket too.
    assert burst <= accepted <= burst + rate * elapsed, (accepted, elapsed)
    limited = [answer for answer in answers if answer.status_code == 429]
    assert limited
    for answer in limited:
        assert answer.json()["error"]["code"] == "rate_limited"
        assert int(answer.headers["Retry-After"]) >= 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (accepted,)
