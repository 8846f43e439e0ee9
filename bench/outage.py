"""Measurement 10: Postgres stopped and started under the real web and worker processes; how soon they serve."""

from __future__ import annotations

import dataclasses
import time

import psycopg
import requests

from bench import system

DOWN_S = 8.0  # long enough for psycopg_pool's reconnection backoff to reach its 4 s step
BEFORE = 20  # jobs queued and sent before the outage (none is in flight when Postgres stops)


@dataclasses.dataclass(frozen=True)
class Outage:
    stop_s: float  # pg_ctl stop -m fast, under load
    refused: int  # requests answered 503 (database_unavailable) while Postgres was down
    first_202_s: float  # from Postgres accepting connections again (pg_ctl start -w returned)
    first_sent_s: float  # the same origin to the job of that 202 being `sent`
    sent: int
    queued: int
    duplicates: int


def measure(sut: system.System, concurrency: int, down_s: float = DOWN_S) -> Outage:
    """Queue and send a few jobs, stop Postgres for `down_s` (requests meanwhile), start it, time the recovery."""
    sut.reset()
    sut.start_workers(concurrency)
    try:
        queued = [_queue(sut) for _ in range(BEFORE)]
        system.wait_until(lambda: _sent(sut, queued) == BEFORE, 60, "the jobs before the outage sent")
        started = time.monotonic()
        sut.cluster.stop()
        stop_s = time.monotonic() - started
        refused = 0
        while time.monotonic() - started < down_s:
            response = _post(sut, timeout=10)
            refused += response.status_code == 503 and response.json()["error"]["code"] == "database_unavailable"
        sut.cluster.start()  # pg_ctl -w: returns once Postgres accepts connections
        back = time.monotonic()
        first = system.wait_until(lambda: _queue(sut), 60, "a 202 after the restart", interval=0.05)
        first_202_s = time.monotonic() - back
        system.wait_until(lambda: _sent(sut, [first]) == 1, 60, "the job of that 202 sent", interval=0.05)
        first_sent_s = time.monotonic() - back
        queued.append(first)
        counts = requests.get(f"{sut.sim_url}/_sim/sends", timeout=10).json()["by_custom_id"]
        return Outage(stop_s, refused, first_202_s, first_sent_s, _sent(sut, queued), len(queued),
                      sum(count - 1 for count in counts.values()))
    finally:
        sut.stop_workers()


def _post(sut: system.System, timeout: float) -> requests.Response:
    message = {"from": {"email": "shop@example.com"}, "to": [{"email": "outage@example.org"}],
               "subject": "S", "text": "T"}
    return requests.post(f"{sut.web_url}/queue", json=message, headers=sut.auth, timeout=timeout)


def _queue(sut: system.System) -> str | None:
    """A job queued now: its id, or None if it was not accepted."""
    try:
        response = _post(sut, timeout=10)
    except requests.RequestException:
        return None
    return str(response.json()["id"]) if response.status_code == 202 else None


def _sent(sut: system.System, ids: list[str | None]) -> int:
    with psycopg.connect(sut.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[]) AND status = 'sent'",
                           ([i for i in ids if i],)).fetchone()
    return int(row[0]) if row else 0
