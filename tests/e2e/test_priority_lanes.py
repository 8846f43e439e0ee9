"""Transactional mail is never delayed by a backlog of bulk mail."""

from __future__ import annotations

import time

import psycopg
import pytest
import requests

from tests.e2e.conftest import System, wait_until

pytestmark = pytest.mark.e2e


def test_one_transactional_job_overtakes_5000_queued_bulk_jobs(system: System) -> None:
    # Slow Mailjet down so that the bulk backlog takes many seconds to drain.
    requests.post(f"{system.simulator_url}/_sim/config", json={"latency_s": 0.3}, timeout=5).raise_for_status()
    for batch in range(10):
        messages = [
            {"from": {"email": "news@example.com"}, "to": [{"email": f"b{batch}-{i}@example.org"}],
             "subject": "Newsletter", "text": "…", "priority": "bulk"}
            for i in range(500)
        ]
        response = requests.post(
            f"{system.web_url}/queue", json={"messages": messages}, headers=system.auth, timeout=30
        )
        assert response.status_code == 202

    started = time.monotonic()
    response = requests.post(
        f"{system.web_url}/queue",
        json={"from": {"email": "auth@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Your code",
              "text": "123456"},
        headers=system.auth,
        timeout=5,
    )
    job_id = response.json()["id"]
    wait_until(
        lambda: requests.get(f"{system.web_url}/status/{job_id}", headers=system.auth, timeout=5).json()["status"]
        == "sent",
        timeout=5, interval=0.02, message="transactional job sent",
    )
    elapsed = time.monotonic() - started

    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE priority = 'bulk' AND status <> 'sent'").fetchone()
    bulk_waiting = int(row[0]) if row else 0
    assert elapsed < 2.0
    assert bulk_waiting > 1000  # it really overtook a backlog
