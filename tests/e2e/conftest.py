"""Real processes: gunicorn, `mailer worker` and the Mailjet simulator, against a test database."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import psycopg.conninfo
import pytest
import requests

from mailer import pgcluster
from mailer.services import apps
from tests.conftest import EVENTS_AUTH

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The e2e tests that run twice, on a direct DATABASE_URL and through PgBouncer in transaction mode (the direct URL
# beside it): `@BOTH_ROUTES` on a test that takes the `system` fixture (README "PgBouncer" says which and why).
ROUTES = ("direct", "pgbouncer")
BOTH_ROUTES = pytest.mark.parametrize("system", ROUTES, indirect=True)


@dataclasses.dataclass
class System:
    """A running mailer: where to reach it and how to control its processes."""

    web_url: str
    simulator_url: str
    api_key: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]
    log_dir: pathlib.Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start (or restart) one named process, its output in log_dir/NAME.log."""
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        self.processes[name] = process
        return process

    def start_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, "-m", "mailer.cli", "worker"])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout} s")


def pooled_env(database_url: str, bouncer: pgcluster.Bouncer | None) -> dict[str, str]:
    """DATABASE_URL (and the direct URL) of the processes: the database itself, or the same one through `bouncer`."""
    if bouncer is None:
        return {"DATABASE_URL": database_url}
    dbname = str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
    return {"DATABASE_URL": bouncer.url(dbname), "MAILER_DIRECT_DATABASE_URL": database_url}


@contextlib.contextmanager
def running_system(database_url: str, log_dir: pathlib.Path, bouncer: pgcluster.Bouncer | None = None,
                   **extra_env: str) -> Iterator[System]:
    """gunicorn + one worker + the simulator (posting events back to /events), all real processes; through
    `bouncer` (PgBouncer in transaction mode) when given."""
    with psycopg.connect(database_url) as conn:
        _, api_key = apps.create_app(conn, "e2e")
    web_port, sim_port = pgcluster.free_port(), pgcluster.free_port()
    web_url, sim_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sim_port}"
    env = {
        **os.environ,
        **pooled_env(database_url, bouncer),
        "MAILJET_API_URL": sim_url,
        "MAILJET_API_KEY": "e2e-key",
        "MAILJET_API_SECRET": "e2e-secret",
        "MAILER_EVENTS_AUTH": EVENTS_AUTH,
        "MAILER_MAILJET_TIMEOUT_S": "2",
        "MAILER_SEND_BACKOFF_BASE_S": "0.2",
        "MAILER_SEND_BACKOFF_CAP_S": "1",
        "PYTHONUNBUFFERED": "1",
        "MAILER_PUBLIC_URL": web_url,  # as `mailer dev` does: bulk mail's unsubscribe links point at this web
        **extra_env,
    }
    system = System(web_url, sim_url, api_key, env, {}, log_dir)
    system.start("simulator", [
        sys.executable, "-m", "mailer.mailjet.simulator", "--port", str(sim_port),
        "--api-key", "e2e-key", "--api-secret", "e2e-secret",
        "--events-url", f"{web_url}/events", "--events-auth", EVENTS_AUTH,
    ])
    system.start("web", [
        sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{web_port}",
        "--workers", "2", "--threads", "4",
    ])
    system.start_worker()
    try:
        both_ready = lambda: _ready(web_url + "/readyz") and _ready(sim_url + "/_sim/sends")  # noqa: E731
        wait_until(both_ready, 30, message="web and simulator ready")
        yield system
    except Exception:
        print(system.logs())
        raise
    finally:
        for name in list(system.processes):
            system.stop(name)


@pytest.fixture
def system(database_url: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """The whole system on the test's database: directly, or through PgBouncer with `@BOTH_ROUTES`."""
    route = getattr(request, "param", "direct")
    bouncer = request.getfixturevalue("pgbouncer") if route == "pgbouncer" else None
    with running_system(database_url, tmp_path, bouncer) as running:
        yield running


def _ready(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=1).status_code == 200
    return False
