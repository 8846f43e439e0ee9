"""The webhook fan-out's cost (issue 17): the status-changing transaction of a 50-recipient job with 0, 10
and 150 endpoints, and how fast the worker's expansion writes the deliveries afterwards."""

from __future__ import annotations

import dataclasses
import statistics
import time

import psycopg
import requests

RECIPIENTS = 50
ENDPOINT_COUNTS = (0, 10, 150)  # 10 is the cap; 150 an installation from before it (the case)
EXPAND_BATCH = 1000  # MAILER_WEBHOOK_EXPAND_BATCH's default


@dataclasses.dataclass(frozen=True)
class FanOut:
    """Median and p90 of the status change's transaction per endpoint count, and the expansion's rate."""

    change_ms: dict[int, tuple[float, float]]
    expanded: int
    expand_s: float
    largest_batch_ms: float

    @property
    def deliveries_per_s(self) -> float:
        return self.expanded / self.expand_s if self.expand_s else 0.0


def measure(database_url: str, web_url: str, auth: dict[str, str], app_id: int, changes: int) -> FanOut:
    """`changes` status changes of 50-recipient jobs for each endpoint count, then the expansion of all."""
    change_ms: dict[int, tuple[float, float]] = {}
    expanded, expand_s, largest = 0, 0.0, 0.0
    with psycopg.connect(database_url, autocommit=True) as conn:
        for endpoints in ENDPOINT_COUNTS:
            _set_endpoints(conn, app_id, endpoints)
            jobs = [_queue(web_url, auth, n) for n in range(changes)]
            timings = []
            for n, job_id in enumerate(jobs):
                started = time.perf_counter()
                with conn.transaction():  # what the sender's status change is: one UPDATE of the job's recipients
                    conn.execute("UPDATE recipients SET status = 'sent', message_id = %s + position WHERE job_id = %s",
                                 (2**58 + endpoints * 100_000 + n * 100, job_id))
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            change_ms[endpoints] = (statistics.median(timings), timings[int(len(timings) * 0.9)])
            while True:  # the worker's part, batch by batch, as webhook_delivery.expand runs it
                started = time.perf_counter()
                written = conn.execute("SELECT webhook_expand_fan_outs(%s)", (EXPAND_BATCH,)).fetchone()[0]  # type: ignore[index]
                took = time.perf_counter() - started
                expanded, expand_s, largest = expanded + written, expand_s + took, max(largest, took * 1000)
                if written < EXPAND_BATCH:
                    break
        _set_endpoints(conn, app_id, 0)
    return FanOut(change_ms, expanded, expand_s, largest)


def _set_endpoints(conn: psycopg.Connection, app_id: int, count: int) -> None:
    conn.execute("DELETE FROM webhook_endpoints WHERE app_id = %s", (app_id,))
    conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret) "
        "SELECT %s, 'https://hooks.example/' || n, '{*}', 'whsec_bench' FROM generate_series(1, %s) AS n",
        (app_id, count),
    )


def _queue(web_url: str, auth: dict[str, str], n: int) -> str:
    body = {"from": {"email": "billing@example.com"}, "subject": f"Fan-out {n}", "text": "hi",
            "to": [{"email": f"r{k}@example.org"} for k in range(RECIPIENTS)],
            "send_at": "2100-01-01T00:00:00Z"}  # scheduled far ahead: no worker sends it meanwhile
    response = requests.post(f"{web_url}/queue", json=body, headers=auth, timeout=30)
    response.raise_for_status()
    return str(response.json()["id"])
