"""Measurement 9: kill -9 of a worker with its Mailjet calls in flight; how long until its jobs are sent."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import signal
import sys
import time

import psycopg
import requests

from bench import loadgen, measure
from bench.system import System, wait_until

LATENCY_S = 1.5  # Mailjet's answer time, as the issue measured it
CONCURRENCY = 44  # tasks per worker process: 40 calls of 50 (2,000 jobs) in flight, 4 slots for the periodic tasks
BATCH = 500
IN_FLIGHT = 2_000  # the kill comes once the first worker holds this many (or its claims stop growing)
# Measurement 9b: a shared call cap that does not bound recovery (2,000 lookups at the default 100 per second
# take 20 s by themselves).
RAISED_CAP = 400.0


@dataclasses.dataclass(frozen=True)
class Recovery:
    """In flight in the killed worker at the kill; seconds from the kill until they were all claimable again,
    and until the last of them was sent; duplicates (CustomIDs Mailjet got more than once)."""

    in_flight: int
    claimable_s: float
    last_sent_s: float
    duplicates: int


def run(sut: System, emails: int, max_calls_per_s: float | None = None) -> Recovery:
    """Two workers at 1.5 s a Mailjet call: the first holds 2,000 of the `emails` (40 calls of 50) in flight when
    it is killed, the second is alive; optionally another shared call cap."""
    sut.reset()
    sut.simulator(latency_s=LATENCY_S)
    cap = {} if max_calls_per_s is None else {"MAILER_MAILJET_MAX_CALLS_PER_S": str(max_calls_per_s)}
    for name in ("worker0", "worker1"):
        sut.start(name, [*_WORKER], MAILER_WORKER_CONCURRENCY=str(CONCURRENCY), **cap)
    first = wait_until(lambda: _sender_of(sut, sut.processes["worker0"].pid), 30, "worker0 registered")
    wait_until(lambda: _sender_of(sut, sut.processes["worker1"].pid), 30, "worker1 registered")
    # The second worker waits (stopped, holding nothing) while the first claims every job, so that all of them
    # are in flight in the one killed; it goes on just before the kill.
    sut.processes["worker1"].send_signal(signal.SIGSTOP)
    bodies = [json.dumps({"messages": [loadgen.message(n) for n in range(start, min(start + BATCH, emails))]})
              .encode() for start in range(0, emails, BATCH)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda body: measure._post_json(sut, "/queue", body), bodies))

    # Kill once the first worker holds 2,000 jobs (every task of it has a call in flight), or its claims stopped
    # growing for most of a call's latency (it got fewer than that).
    seen, steady_since = -1, time.monotonic()
    while True:
        held = _sending_by(sut, first)
        if held > seen:
            seen, steady_since = held, time.monotonic()
        if held >= IN_FLIGHT or (held > 0 and time.monotonic() - steady_since > LATENCY_S / 2):
            break
        time.sleep(0.01)
    with psycopg.connect(sut.database_url, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute(
            "SELECT id FROM jobs WHERE status = 'sending' AND claimed_by = %s", [first])]
    # In flight: every claim's call started (Mailjet has the request). A job claimed but not yet called is not,
    # and its lookup finding nothing waits MAILER_SEND_LISTING_DELAY_S before it is sent.
    claims = -(-held // 50)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: requests.get(f"{sut.sim_url}/_sim/sends", timeout=10).json()["calls"] >= claims,
                   LATENCY_S, "every claim's call started", 0.02)
    sut.processes["worker1"].send_signal(signal.SIGCONT)
    process = sut.processes.pop("worker0")
    process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    process.wait()
    wait_until(lambda: _sending_by(sut, first) == 0, 120, "the killed worker's claims taken over", 0.05)
    claimable = time.monotonic() - killed
    wait_until(lambda: _all_sent(sut, ids), 600, "the killed worker's jobs sent", 0.1)
    last_sent = _last_sent_after(sut, ids, killed)
    sut.stop_workers()
    sut.simulator(latency_s=0.1)
    return Recovery(len(ids), claimable, last_sent, measure._duplicates(sut, emails))


_WORKER = (sys.executable, "-m", "mailer.cli", "worker")


def _sender_of(sut: System, pid: int) -> int | None:
    with psycopg.connect(sut.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM senders WHERE os_pid = %s AND retired_at IS NULL", [pid]).fetchone()
    return None if row is None else int(row[0])


def _sending_by(sut: System, sender_id: int) -> int:
    with psycopg.connect(sut.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'sending' AND claimed_by = %s",
                           [sender_id]).fetchone()
    return int(row[0]) if row else 0


def _all_sent(sut: System, ids: list[object]) -> bool:
    with psycopg.connect(sut.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT bool_and(status = 'sent') FROM jobs WHERE id = ANY(%s)", [ids]).fetchone()
    return bool(row and row[0])


def _last_sent_after(sut: System, ids: list[object], killed: float) -> float:
    """Seconds from the kill to the last of `ids` sent, by the database's clock (as the API would tell)."""
    with psycopg.connect(sut.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - max(at)) FROM job_events WHERE type = 'sent' AND job_id = ANY(%s)",
            [ids]).fetchone()
    ago = float(row[0]) if row and row[0] is not None else 0.0
    return time.monotonic() - ago - killed
