"""`mailer dev`: Postgres, web, worker and the Mailjet simulator on one machine, no set-up."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql

from mailer import db, pgcluster
from mailer.config import Settings
from mailer.domain import errors
from mailer.mailjet import simulator
from mailer.services import apps
from mailer.store import migrations

DEV_APP = "dev"
DEV_EVENTS_AUTH = "mailjet:dev-events-secret"


def run(base_dir: str) -> int:
    """Start everything, print the URL and a ready API key, run until Ctrl-C."""
    settings = Settings.from_env()
    with contextlib.ExitStack() as stack:
        database_url = settings.database_url or stack.enter_context(_private_postgres(pathlib.Path(base_dir)))
        direct_url = settings.direct_database_url or database_url  # migrations take a session advisory lock
        migrations.migrate(direct_url, connect_timeout_s=settings.db_connect_timeout_s,
                           lock_timeout_s=settings.migration_lock_timeout_s)
        with db.connect(database_url, settings) as conn:
            _, api_key = _dev_key(conn)
        web_url = f"http://127.0.0.1:{settings.port}"
        env = {**os.environ, "DATABASE_URL": database_url,
               "MAILER_EVENTS_AUTH": settings.events_auth or DEV_EVENTS_AUTH,
               # its own address, unless set: bulk mail's unsubscribe links point at this web
               "MAILER_PUBLIC_URL": settings.public_url or web_url,
               # plain http on loopback: a Secure cookie would be a browser's choice to keep or drop
               "MAILER_DASHBOARD_COOKIE_SECURE": "0",
               # web and worker share their metrics: /metrics shows the worker's sends too
               "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR")
               or stack.enter_context(tempfile.TemporaryDirectory(prefix="mailer-dev-metrics-"))}
        children: list[subprocess.Popen[bytes]] = []
        stack.callback(_stop_all, children)
        if not settings.mailjet_api_key:
            sim_port = pgcluster.free_port()
            user, password = env["MAILER_EVENTS_AUTH"].split(":", 1)
            env.update(
                MAILJET_API_URL=f"http://127.0.0.1:{sim_port}",
                MAILJET_API_KEY="dev",
                MAILJET_API_SECRET="dev",  # noqa: S106  # the local simulator's, not a real secret
            )
            children.append(_spawn([
                sys.executable, "-m", "mailer.mailjet.simulator", "--port", str(sim_port),
                "--api-key", "dev", "--api-secret", "dev",
                "--events-url", f"{web_url}/events", "--events-auth", f"{user}:{password}",
                # The dev database outlives the simulator: a restarted one must not give a MessageID of an
                # earlier run, or its events would land on that run's recipient.
                "--first-message-id", str(simulator.restart_safe_first_message_id()),
            ], env))
        children.append(_spawn([
            sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{settings.port}",
            "--workers", "2", "--threads", "4",
        ], env))
        children.append(_spawn([sys.executable, "-m", "mailer.cli", "worker"], env))
        _wait_for_web(web_url, children)
        print(f"\nmailer dev is running at {web_url}  (Ctrl-C stops everything)")
        print("Mailjet: " + (f"the built-in simulator at {env['MAILJET_API_URL']} (what it was sent: /_sim/sends)"
                             if not settings.mailjet_api_key else settings.mailjet_api_url))
        print(f"try:\n  curl -s -X POST {web_url}/queue -H 'Authorization: Bearer {api_key}' \\\n"
              "    -H 'Content-Type: application/json' \\\n"
              "    -d '{\"from\":{\"email\":\"me@example.com\"},\"to\":[{\"email\":\"ann@example.org\"}],"
              "\"subject\":\"Hi\",\"text\":\"Hello\"}'")
        print(f"  curl -s {web_url}/status/<id> -H 'Authorization: Bearer {api_key}'")
        print(f"dashboard: {web_url}/dashboard (log in with the API key below)")
        print("API key of the dev app:")
        print(api_key, flush=True)
        return _wait(children)
    return 0


@contextlib.contextmanager
def _private_postgres(base_dir: pathlib.Path) -> Iterator[str]:
    base = pgcluster.reachable_base_dir(base_dir.resolve() / "postgres", "mailer-dev-postgres")
    cluster = pgcluster.Cluster(base_dir=base, port=pgcluster.free_port())
    print(f"starting a private Postgres in {base} on port {cluster.port}", flush=True)
    cluster.ensure_running()
    try:
        with db.connect(cluster.url(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'mailer'").fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("mailer")))
        yield cluster.url("mailer")
    finally:
        cluster.stop()


def _dev_key(conn: psycopg.Connection) -> tuple[object, str]:
    # Keys are stored hashed, so a known dev key means a fresh one each run.
    try:
        return apps.rotate_key(conn, DEV_APP)
    except errors.NotFound:
        return apps.create_app(conn, DEV_APP)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Each child in a process group of its own, so Ctrl-C reaches `mailer dev` alone, which stops each child
    # with one SIGTERM. A gunicorn gthread worker that gets the terminal's SIGINT and then its master's
    # SIGQUIT re-enters ThreadPoolExecutor.shutdown from the second signal handler and waits forever on the
    # lock the first one holds, an orphan still bound to the port.
    return subprocess.Popen(argv, env=env, start_new_session=True)  # noqa: S603  # our own interpreter and modules


def _wait_for_web(url: str, children: list[subprocess.Popen[bytes]]) -> None:
    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise RuntimeError("a mailer process exited during start-up; see the output above")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready within 30 s")


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop["now"]:
        if any(child.poll() is not None for child in children):
            print("a mailer process exited; stopping everything", file=sys.stderr)
            return 1
        time.sleep(0.3)
    return 0


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=25)  # gunicorn's graceful_timeout is 20 s
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever the child left behind in its group (its own group)
