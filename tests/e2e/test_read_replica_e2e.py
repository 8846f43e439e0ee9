"""gunicorn with DATABASE_REPLICA_URL on a real streaming replica: its listings come from the replica, keep
answering from the primary while the replica is down, and come from the replica again once it is back."""

from __future__ import annotations

import pathlib
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mailer import pgcluster
from tests import replica_support
from tests.e2e.conftest import System, running_system, wait_until

pytestmark = pytest.mark.e2e

HEADER = "X-Mailer-Read-Source"
REPLICA_TIMEOUT_S = 1.0
ROUNDS = 12  # requests in a row: gunicorn's two processes take turns, and each judges the replica on its own


def logs(system: System) -> requests.Response:
    # A new connection for each request, so that both gunicorn processes answer some.
    response = requests.get(f"{system.web_url}/logs", headers={**system.auth, "Connection": "close"}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def all_from(system: System, source: str, job: str) -> bool:
    for _ in range(ROUNDS):
        response = logs(system)
        if response.headers[HEADER] != source or job not in [item["id"] for item in response.json()["items"]]:
            return False
    return True


def scrape(system: System) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{system.web_url}/metrics", timeout=10, headers={"Connection": "close"})
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_listings_follow_the_replica_through_its_outage(
    database_url: str, replica_url: str, pg_cluster: pgcluster.Cluster, pg_standby: pgcluster.Cluster,
    tmp_path: pathlib.Path,
) -> None:
    env = {"DATABASE_REPLICA_URL": replica_url, "MAILER_REPLICA_TIMEOUT_S": str(REPLICA_TIMEOUT_S),
           "MAILER_REPLICA_CHECK_INTERVAL_S": "0.2", "MAILER_REPLICA_RETRY_S": "0.5",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    with running_system(database_url, tmp_path, **env) as system:
        message = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}],
                   "subject": "replica", "text": "hi"}
        queued = requests.post(f"{system.web_url}/queue", json=message, headers=system.auth, timeout=10)
        assert queued.status_code == 202, queued.text
        job = queued.json()["id"]
        wait_until(lambda: all_from(system, "replica", job), 30, message="listings from the replica")

        pg_standby.stop()
        try:
            for _ in range(ROUNDS):
                started = time.monotonic()
                response = logs(system)
                took = time.monotonic() - started
                assert job in [item["id"] for item in response.json()["items"]]
                assert took < REPLICA_TIMEOUT_S + 4.0, took  # one replica wait at most, with room for a busy box
            assert all_from(system, "primary", job)
            metrics = scrape(system)
            assert metrics[("mailer_replica_fallbacks_total", (("reason", "unavailable"),))] >= 1
            assert metrics[("mailer_replica_reads_total", ())] >= ROUNDS
            assert metrics[("mailer_replica_usable", ())] == 0
        finally:
            pg_standby.start()
        replica_support.wait_caught_up(pg_cluster, pg_standby)
        wait_until(lambda: all_from(system, "replica", job), 30, message="listings from the replica again")
