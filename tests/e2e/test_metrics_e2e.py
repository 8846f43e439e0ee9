"""GET /metrics with real processes: gunicorn's two workers and `mailer worker` share PROMETHEUS_MULTIPROC_DIR,
so whichever gunicorn process answers a scrape shows the sums of all of them."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import pathlib
import re

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EVENTS_AUTH
from tests.e2e.conftest import running_system, wait_until

pytestmark = pytest.mark.e2e

EVENTS = 40
MAILJET = {"Authorization": "Basic " + base64.b64encode(EVENTS_AUTH.encode()).decode()}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A new connection for each request: gunicorn's processes take turns accepting them.
    response = requests.get(f"{url}/metrics", timeout=10, headers={"Connection": "close"})
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def post_event(url: str, number: int) -> None:
    # An event name the simulator never sends: counted as "other", and by this test alone.
    event = {"event": "e2e_probe", "time": 1700000000 + number, "MessageID": 10**6 + number, "email": "x@example.org"}
    response = requests.post(f"{url}/events", json=event, headers={**MAILJET, "Connection": "close"}, timeout=10)
    assert response.status_code == 200, response.text


def events_by_process(metrics_dir: pathlib.Path) -> dict[int, float]:
    """The "other" events each process counted, read from its own file in the shared directory."""
    counted: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(re.findall(r"\d+", path.name)[-1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, _ = json.loads(key)
            if sample == "mailer_events_received_total" and labels == {"type": "other"}:
                counted[pid] = counted.get(pid, 0.0) + value
    return counted


def test_every_scrape_shows_the_sums_of_all_processes(database_url: str, tmp_path: pathlib.Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    with running_system(database_url, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as system:
        url = system.web_url
        response = requests.post(
            f"{url}/queue", headers=system.auth, timeout=10,
            json={"from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "s",
                  "text": "t"},
        )
        assert response.status_code == 202
        job_id = response.json()["id"]
        wait_until(
            lambda: requests.get(f"{url}/status/{job_id}", headers=system.auth, timeout=5).json()["status"] == "sent",
            timeout=20, message="job sent",
        )
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda number: post_event(url, number), range(EVENTS)))

        scrapes = [scrape(url) for _ in range(10)]
        by_process = events_by_process(metrics_dir)

    for samples in scrapes:
        # Counted by the gunicorn processes, each its share: every scrape shows all of them.
        assert samples[("mailer_events_received_total", (("type", "other"),))] == EVENTS
        # Counted by `mailer worker`, another process altogether.
        assert samples[("mailer_jobs_total", (("priority", "transactional"), ("status", "sent")))] == 1
        assert samples[("mailer_send_latency_seconds_count", ())] == 1
        assert samples[("mailer_mailjet_responses_total", (("call", "send"), ("code", "200")))] == 1
        assert samples[("mailer_metrics_database_up", ())] == 1
    assert sum(by_process.values()) == EVENTS
    assert len([pid for pid, counted in by_process.items() if counted]) == 2, by_process  # both gunicorn workers


def test_many_scrapers_cost_each_web_process_one_round_of_queries(database_url: str, tmp_path: pathlib.Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    with running_system(database_url, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                        MAILER_METRICS_DB_INTERVAL_S="3600") as system:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            scrapes = list(pool.map(lambda _: scrape(system.web_url), range(80)))
        last = scrape(system.web_url)

    assert all(samples[("mailer_metrics_database_up", ())] == 1 for samples in scrapes)
    # 81 scrapes, two gunicorn processes: at most one round of the gauges' queries in each
    assert 1 <= last[("mailer_metrics_database_reads_total", ())] <= 2
