"""Replay by window at 100,000 events (issue 22): the request's time, the worker's expansion rate and chunk
times, and how long a live delivery waits while a replay is being delivered. Run on its own:
`.venv/bin/python -m bench.replay_window [events] [--no-host-rate]` (a throwaway PostgreSQL server, a receiver on
127.0.0.1, mailer's default settings but MAILER_WEBHOOK_ALLOW_PRIVATE=1 for that receiver; `--no-host-rate` sets
MAILER_WEBHOOK_HOST_RATE_PER_S=0, the per-host limit off, and says so in its output). No worker process: the script
calls the webhook task's functions itself, back to back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import shutil
import statistics
import sys
import tempfile
import threading
import time

import psycopg
import psycopg_pool

from mailer import pgcluster
from mailer.config import Settings
from mailer.services import apps, webhook_delivery, webhook_replays, webhooks
from mailer.store import migrations
from mailer.store import webhook_replays as replay_store

EVENTS = 100_000
LIVE_PROBES = 5
LIVE_WAIT_MAX_S = 60.0


class _Receiver(http.server.ThreadingHTTPServer):
    """Answers 200 to every POST and remembers when each webhook-id arrived."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.arrived[self.headers["webhook-id"]] = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # http.server's signature
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def main(argv: list[str]) -> int:
    no_host_rate = "--no-host-rate" in argv
    numbers = [a for a in argv if a != "--no-host-rate"]
    events = int(numbers[0]) if numbers else EVENTS
    base = tempfile.mkdtemp(prefix="mailer-bench-replay-")
    cluster = pgcluster.Cluster(base_dir=pgcluster.pathlib.Path(base), port=pgcluster.free_port())
    cluster.ensure_running()
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        migrations.migrate(url)
        settings = dataclasses.replace(
            Settings.from_env({"DATABASE_URL": url, "MAILER_EVENTS_AUTH": "u:p"}), webhook_allow_private=True,
        )
        if no_host_rate:
            settings = dataclasses.replace(settings, webhook_host_rate_per_s=0)
        print(f"settings: defaults, MAILER_WEBHOOK_HOST_RATE_PER_S={settings.webhook_host_rate_per_s:g}"
              + (" (the per-host limit off)" if no_host_rate else " (the default)"))
        _run(url, settings, receiver, events)
    finally:
        receiver.shutdown()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _run(url: str, settings: Settings, receiver: _Receiver, events: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn, \
            psycopg_pool.ConnectionPool(url, min_size=4, max_size=8, open=True) as pool:
        app, _ = apps.create_app(conn, "bench")
        endpoint = webhooks.create(conn, app_id=app.id, url=f"http://127.0.0.1:{receiver.server_port}/hook",
                                   events=["*"], settings=settings)
        conn.execute(
            "INSERT INTO webhook_messages (app_id, type, body, created_at)"
            " SELECT %(app)s, 'email.delivered', jsonb_build_object('type', 'email.delivered', 'data',"
            "        jsonb_build_object('n', n, 'recipient', 'r' || n || '@example.org')),"
            "        now() - make_interval(secs => n * 0.5) FROM generate_series(1, %(n)s) AS n",
            {"app": app.id, "n": events},
        )
        conn.execute("VACUUM ANALYZE webhook_messages")
        now = dt.datetime.now(dt.UTC)
        since = now - dt.timedelta(days=2)
        request_ms = []
        for _ in range(5):
            started = time.perf_counter()
            with pool.connection() as one:
                answer = webhook_replays.start(one, app_id=app.id, endpoint_id=endpoint["id"], since=since,
                                               until=now, types=None, settings=settings)
            request_ms.append((time.perf_counter() - started) * 1000)
            conn.execute("UPDATE webhook_replays SET finished_at = now(), outcome = 'cancelled'")
        print(f"request: {answer['queued']} matched; {statistics.median(request_ms):.1f} ms median of 5 "
              f"(count + insert, one transaction)")

        # The expansion alone, chunks of MAILER_WEBHOOK_EXPAND_BATCH, nothing waiting (the lane wide open).
        replay = webhook_replays.start(conn, app_id=app.id, endpoint_id=endpoint["id"], since=since, until=now,
                                       types=None, settings=settings)
        chunk_ms, written = [], 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            with pool.connection() as one:
                replay_store.claim_webhook_replay(one, after_id=0)
                done = replay_store.expand_webhook_replay_chunk(
                    one, replay_id=replay["id"], max_rows=settings.webhook_expand_batch)
            chunk_ms.append((time.perf_counter() - t0) * 1000)
            written += int(done["expanded"]) if done else 0
            if not done or done["finished"]:
                break
        total_s = time.perf_counter() - started
        chunk_ms.sort()
        print(f"expansion: {written} deliveries in {total_s:.1f} s ({written / total_s:,.0f}/s); chunk of "
              f"{settings.webhook_expand_batch}: median {statistics.median(chunk_ms):.1f} ms, "
              f"max {chunk_ms[-1]:.1f} ms")

        # The baseline: a live delivery on an idle lane (nothing replayed), the same probe as below.
        conn.execute("UPDATE webhook_deliveries SET status = 'succeeded'")
        idle = [_live_wait(conn, pool, settings, receiver, app.id, endpoint["id"])[0] for _ in range(LIVE_PROBES)]
        print(f"live, no replay: live delivery waits {', '.join(f'{w:.0f}' for w in idle)} ms")

        # A replay through the real lane while live deliveries arrive: how long each live one waits.
        replay = webhook_replays.start(conn, app_id=app.id, endpoint_id=endpoint["id"], since=since, until=now,
                                       types=None, settings=settings)
        waits, probes, posted = [], 0, 0
        started = time.perf_counter()
        while probes < LIVE_PROBES:
            posted += _post_round(pool, settings)
            if posted >= (probes + 1) * 300:
                wait_ms, replayed = _live_wait(conn, pool, settings, receiver, app.id, endpoint["id"])
                waits.append(wait_ms)
                posted += replayed
                probes += 1
        elapsed = time.perf_counter() - started
        print(f"live under replay: {posted} replayed posts in {elapsed:.1f} s ({posted / elapsed:,.0f}/s, "
              f"per-endpoint concurrency {webhook_delivery.per_endpoint_limit(settings)}); live delivery waits "
              f"{', '.join(f'{w:.0f}' for w in waits)} ms (lane {settings.webhook_replay_in_flight})")


def _post_round(pool: psycopg_pool.ConnectionPool, settings: Settings) -> int:
    """One round of the webhook task's delivery: how many it posted (not those put back while their host is over
    MAILER_WEBHOOK_HOST_RATE_PER_S)."""
    return sum(1 for done in webhook_delivery.deliver_due_batch(pool, settings) if done.attempt is not None)


def _live_wait(conn: psycopg.Connection, pool: psycopg_pool.ConnectionPool, settings: Settings,
               receiver: _Receiver, app_id: int, endpoint_id: str) -> tuple[float, int]:
    """Queue one live delivery and deliver until it arrives: its wait in ms, and the other posts meanwhile."""
    msg = conn.execute(
        "INSERT INTO webhook_messages (app_id, type, body) VALUES (%s, 'email.opened', '{}')"
        " RETURNING id, created_at", (app_id,)).fetchone()
    if msg is None:
        raise RuntimeError("no live message written")
    conn.execute("INSERT INTO webhook_deliveries (message_id, message_created_at, endpoint_id, "
                 "next_attempt_at) VALUES (%s, %s, %s, %s)", (msg[0], msg[1], endpoint_id, msg[1]))
    queued_at, posted = time.monotonic(), 0
    while msg[0] not in receiver.arrived:
        if time.monotonic() - queued_at > LIVE_WAIT_MAX_S:
            raise RuntimeError(f"a live delivery waited over {LIVE_WAIT_MAX_S} s: starved")
        posted += _post_round(pool, settings)
    return (receiver.arrived[msg[0]] - queued_at) * 1000, posted

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
