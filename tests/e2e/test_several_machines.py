"""Several machines: two web and three worker processes, each with its own pools, against one PostgreSQL through
PgBouncer in transaction mode (the direct URL beside it); one web and one worker killed with kill -9 mid-load.
Every accepted email is sent exactly once, and clients retrying with their Idempotency-Key create nothing twice."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys
import threading
import time
import uuid

import psycopg
import pytest
import requests

from mailer import pgcluster
from tests.e2e.conftest import System, running_system, wait_until
from tests.e2e.test_crash_safety import simulator
from tests.e2e.test_sender_liveness import sender_of, sending_by

pytestmark = pytest.mark.e2e

CLIENTS, REQUESTS_EACH, BATCH = 6, 20, 25  # 3,000 emails in 120 batches
KILL_AFTER = 40  # batches accepted before one web and one worker are killed
GIVE_UP_S = 30.0  # a client retries one request (another web, same key) for this long at most


def ready(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=1).status_code == 200
    return False


def kill_9_web(system: System, name: str) -> None:
    """A web machine dying: its gunicorn processes and their master, all with SIGKILL."""
    master = system.processes.pop(name)
    children = pathlib.Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    for pid in map(int, children):
        os.kill(pid, signal.SIGKILL)
    master.kill()
    master.wait()


def frozen_with_claims(system: System, sender_id: int) -> bool:
    """Stop the worker (SIGSTOP); if it holds claims now it stays stopped, for its kill -9 to find them in flight."""
    worker = system.processes["worker2"]
    worker.send_signal(signal.SIGSTOP)
    if sending_by(system, sender_id) > 0:
        return True
    worker.send_signal(signal.SIGCONT)
    return False


class Client(threading.Thread):
    """An app posting batches, each with its own Idempotency-Key, to its home web; on a failure (a refused or
    broken connection, an answer cut off, 409 while the first attempt is in flight, 503) the same request goes to
    the other web."""

    def __init__(self, number: int, webs: list[str], auth: dict[str, str], accepted: list[int]) -> None:
        super().__init__(name=f"client-{number}", daemon=True)
        self.number, self.webs, self.auth, self.accepted = number, webs, auth, accepted
        self.ids: list[str] = []
        self.retried = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            for request in range(REQUESTS_EACH):
                self.ids += self._post(request)
                self.accepted.append(1)
        except Exception as exc:  # reported by the test
            self.error = f"{type(exc).__name__}: {exc}"

    def _post(self, request: int) -> list[str]:
        body = {"messages": [
            {"from": {"email": "shop@example.com"}, "to": [{"email": f"c{self.number}-{request}-{i}@example.org"}],
             "subject": "Order", "text": "Thanks"} for i in range(BATCH)
        ]}
        headers = {**self.auth, "Idempotency-Key": str(uuid.uuid4())}
        deadline, attempt = time.monotonic() + GIVE_UP_S, 0
        while True:
            web = self.webs[(self.number + attempt) % len(self.webs)]
            try:
                answer = requests.post(f"{web}/queue", json=body, headers=headers, timeout=10)
                if answer.status_code == 202:
                    return [job["id"] for job in answer.json()["jobs"]]
                assert answer.status_code in (409, 503), answer.text
            except requests.RequestException:  # refused, reset, or the answer cut off as the web died
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"request {request} of client {self.number} not accepted in {GIVE_UP_S} s")
            attempt += 1
            self.retried += 1
            time.sleep(0.05)


def test_two_webs_and_three_workers_through_pgbouncer_lose_nothing_and_send_nothing_twice(
    database_url: str, tmp_path: pathlib.Path, pgbouncer: pgcluster.Bouncer
) -> None:
    with running_system(database_url, tmp_path, pgbouncer) as system:
        web2_port = pgcluster.free_port()
        system.start("web2", [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{web2_port}",
                              "--workers", "2", "--threads", "4"])
        web2 = f"http://127.0.0.1:{web2_port}"
        system.start_worker("worker2")
        system.start_worker("worker3")
        wait_until(lambda: ready(f"{web2}/readyz"), 30, 0.1, "web2 ready")
        victim = sender_of(system, "worker2")
        sender_of(system, "worker3")
        simulator(system, "/_sim/config", latency_s=0.2)  # calls in flight when the worker dies

        accepted: list[int] = []
        clients = [Client(n, [system.web_url, web2], system.auth, accepted) for n in range(CLIENTS)]
        began = time.monotonic()
        for client in clients:
            client.start()
        wait_until(lambda: len(accepted) >= KILL_AFTER, 60, 0.02, "load under way")
        wait_until(lambda: frozen_with_claims(system, victim), 30, 0.02, "the victim worker caught holding claims")
        system.stop("worker2", signal.SIGKILL)
        kill_9_web(system, "web2")
        for client in clients:
            client.join(timeout=120)
        assert [client.error for client in clients] == [None] * CLIENTS
        ids = [job_id for client in clients for job_id in client.ids]
        simulator(system, "/_sim/config", latency_s=0.0)

        with psycopg.connect(database_url, autocommit=True) as conn:
            def unfinished() -> int:
                return conn.execute("SELECT count(*) FROM jobs WHERE status <> 'sent'").fetchone()[0]

            wait_until(lambda: unfinished() == 0, 60, 0.5, "every accepted job sent")
            stored = {row[0] for row in conn.execute("SELECT id::text FROM jobs").fetchall()}
            elapsed = time.monotonic() - began
            recovered = conn.execute("SELECT count(*) FROM job_events WHERE type = 'recovered'").fetchone()[0]
        sends = simulator(system, "/_sim/sends")["by_custom_id"]

    retried = sum(client.retried for client in clients)
    print(f"{len(ids)} emails accepted and sent in {elapsed:.1f} s; {retried} requests retried on the other web; "
          f"{recovered} jobs of the killed worker taken over")
    assert len(ids) == len(set(ids)) == CLIENTS * REQUESTS_EACH * BATCH
    assert retried > 0  # the killed web's clients went to the other one
    assert recovered > 0  # the killed worker died holding claims
    assert stored == set(ids)  # a retry answered with the first attempt's jobs, never made new ones
    assert sends == {job_id: 1 for job_id in ids}  # each sent once, the killed worker's claims included
