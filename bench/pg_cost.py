"""PostgreSQL's CPU per email on the send path, one connection, no HTTP: what the schema and the queries cost.

    .venv/bin/python bench/pg_cost.py [--emails 10000] [--rounds 3] [--statements] [--event-post 100]

Starts a private PostgreSQL (fsync on), migrates a fresh database per round, then through mailer's own
store and service functions: queues `--emails` in batches of 500 (as POST /queue does), and sends them all,
50 per batch (claim and screening in one transaction; sent, MessageIDs and early events in another, as
the worker records a Mailjet answer), then applies three Mailjet events per email (sent, open, click) in
grouped POSTs of 100, as POST /events does (`--event-post 1`: one event per POST, each its own transaction and
statement, as Mailjet posts by default). Prints the CPU time of the server process per email for each
phase, read from /proc, so neither Python nor the network counts, and the WAL written per email
(pg_current_wal_lsn). The end-to-end benchmark (bench/run.py) is what the issue measures; this isolates
PostgreSQL's share, which varies far less between runs (docs/scaling.md builds on it).
`--statements` adds pg_stat_statements' top statements (the queries that triggers run included), with
how often each was planned: a statement planned on every call is worth a look. `--endpoints N` gives the
app N enabled webhook endpoints wanting every event, so each status change is fanned out (webhook_enqueue,
and for the three events the Mailjet event detail of the body); the deliveries are not expanded.

To compare two revisions, run this file in a checkout of each (it measures the checkout it is in):
    git worktree add ../before REV && (cd ../before && python "$OLDPWD/bench/pg_cost.py")
An export (git archive) instead of a worktree needs `ln -s ../sql mailer/sql` in it: without it `mailer.sql`, and
so every migration and query, is found through the editable install's mapping, i.e. in the venv's checkout.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = pathlib.Path.cwd() if (pathlib.Path.cwd() / "mailer").is_dir() else pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `mailer` and `bench` of the checkout it runs in (see the docstring)
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402  # after the path fix above

from bench import loadgen  # noqa: E402
from mailer import pgcluster, store  # noqa: E402
from mailer.mailjet import events as mailjet_events  # noqa: E402
from mailer.services import apps, queueing, suppressions, tracking  # noqa: E402
from mailer.store import migrations  # noqa: E402

INGEST_BATCH = 500
SEND_BATCH = 50
EVENT_POST = 100  # events per grouped POST /events
FIRST_MESSAGE_ID = 2**58


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statements", action="store_true", help="print pg_stat_statements' top statements")
    parser.add_argument("--undated", action="store_true",
                        help="events with a `time` a year old: stamped with their arrival, deduplicated by fingerprint")
    parser.add_argument("--event-post", type=int, default=EVENT_POST,
                        help="events per POST /events (1: Mailjet's default, each event its own statement)")
    parser.add_argument("--endpoints", type=int, default=0,
                        help="webhook endpoints of the app (every event): each status change is fanned out")
    args = parser.parse_args(argv)
    base = pathlib.Path(tempfile.mkdtemp(prefix="mailer-pg-cost-"))
    base.chmod(0o755)  # the postgres user must reach pg/ below it
    cluster = pgcluster.Cluster(base_dir=base / "pg", port=pgcluster.free_port(), fast_unsafe=False)
    cluster.ensure_running()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        cluster.stop()
        cluster.start()
        print(f"checkout: {ROOT}\nµs of PostgreSQL CPU per email: queue | claim | record | all | 3 events"
              " | WAL bytes per email (queue to sent) | WAL bytes per email (3 events)")
        totals, event_costs, wal_sends, wal_events = [], [], [], []
        for round_no in range(args.rounds):
            url = _fresh_database(cluster, f"round{round_no}")
            phases, wal_send = _measure(url, args.emails, endpoints=args.endpoints)
            events_cpu, wal_event = _measure_events(url, args.emails, undated=args.undated, per_post=args.event_post)
            totals.append(sum(phases))
            event_costs.append(events_cpu)
            wal_sends.append(wal_send)
            wal_events.append(wal_event)
            print(" | ".join(f"{value:6.1f}" for value in (*phases, totals[-1], events_cpu))
                  + f" | {wal_send:,.0f} | {wal_event:,.0f}", flush=True)
            if args.statements and round_no == args.rounds - 1:
                _print_statements(url)
        print(f"median of all: {statistics.median(totals):.1f} µs per email; 3 events "
              f"{statistics.median(event_costs):.1f} µs; WAL {statistics.median(wal_sends):,.0f} + "
              f"{statistics.median(wal_events):,.0f} bytes per email")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _fresh_database(cluster: pgcluster.Cluster, name: str) -> str:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]  # our own fixed names
    url = cluster.url(name)
    migrations.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("SET pg_stat_statements.track = 'all'")  # the statements of triggers too
        conn.execute("SELECT pg_stat_statements_reset()")
    return url


def _measure(url: str, emails: int, endpoints: int = 0) -> tuple[tuple[float, float, float], float]:
    """CPU µs per email of the server process (queueing, claiming, recording), and WAL bytes per email."""
    with psycopg.connect(url) as conn:
        conn.execute("SET pg_stat_statements.track = 'all'")
        conn.execute("SET pg_stat_statements.track_planning = on")  # a statement planned on every call shows
        app, _ = apps.create_app(conn, "bench")
        conn.execute(  # as bench/webhook_fan_out.py registers them: no API call, no URL check
            "INSERT INTO webhook_endpoints (app_id, url, events, secret) "
            "SELECT %s, 'https://hooks.example/' || n, '{*}', 'whsec_bench' FROM generate_series(1, %s) AS n",
            (app.id, endpoints),
        )
        conn.commit()
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.commit()
        wal_start = _wal_lsn(conn)
        start = _cpu_s(backend)
        for first in range(0, emails, INGEST_BATCH):
            jobs = [_job(n) for n in range(first, min(first + INGEST_BATCH, emails))]
            queueing.accept(conn, app_id=app.id, test=False, jobs=jobs, batch=True, batch_size=SEND_BATCH)
        queued = _cpu_s(backend)
        claim = record = 0.0
        message_id = FIRST_MESSAGE_ID
        while True:
            before = _cpu_s(backend)
            with conn.transaction():
                claimed = store.claim_due_jobs(conn, limit=SEND_BATCH)
                if claimed:
                    suppressions.screen(conn, claimed)
            claimed_at = _cpu_s(backend)
            claim += claimed_at - before
            if not claimed:
                break
            rows: list[dict[str, Any]] = []
            for job in claimed:
                message_id += 1
                rows.append({"job_id": job.id, "kind": "to", "position": 0, "message_id": message_id,
                             "message_uuid": str(uuid.uuid4())})
            with conn.transaction():
                store.mark_jobs_sent(conn, ids=[job.id for job in claimed])
                store.set_recipient_message_ids(conn, recipients=rows)
                store.apply_pending_events(conn, message_ids=[row["message_id"] for row in rows],
                                           job_ids=[row["job_id"] for row in rows])
            record += _cpu_s(backend) - claimed_at
        sent = conn.execute("SELECT count(*) FROM jobs WHERE status = 'sent'").fetchone()[0]  # type: ignore[index]
        if sent != emails:
            raise RuntimeError(f"{sent} of {emails} sent")
        wal = _wal_bytes_since(conn, wal_start) / emails
    return ((queued - start) / emails * 1e6, claim / emails * 1e6, record / emails * 1e6), wal


def _measure_events(url: str, emails: int, undated: bool = False, per_post: int = EVENT_POST) -> tuple[float, float]:
    """CPU µs and WAL bytes per email of applying its three events (sent, open, click), `per_post` a POST.
    Their times are of the last minutes (as Mailjet's are), or with `undated` a year old (implausible: the
    events are stamped with their arrival, mailer/mailjet/events.py)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET pg_stat_statements.track = 'all'")  # the statements of mailer_record_events' triggers too
        recipients = conn.execute("SELECT message_id, job_id::text, email FROM recipients").fetchall()
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        first_time = int(time.time()) - 300 - 3 * len(recipients) if not undated else int(time.time()) - 365 * 86_400
        events = [  # Mailjet's "sent" is the delivery; a typical transactional email is then opened, clicked
            mailjet_events.to_event({"event": name, "time": first_time + n * 3 + after, "MessageID": message_id,
                                     "CustomID": job_id, "email": email})
            for n, (message_id, job_id, email) in enumerate(recipients)
            for after, name in enumerate(("sent", "open", "click"))
        ]
        wal_start = _wal_lsn(conn)
        start = _cpu_s(backend)
        for first in range(0, len(events), per_post):
            with conn.transaction():
                tracking.record_events(conn, events[first:first + per_post])
        return (_cpu_s(backend) - start) / emails * 1e6, _wal_bytes_since(conn, wal_start) / emails


def _wal_lsn(conn: psycopg.Connection) -> str:
    return str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]


def _wal_bytes_since(conn: psycopg.Connection, start: str) -> float:
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (start,)).fetchone()
    return float(row[0])  # type: ignore[index]


def _job(n: int) -> queueing.NewJob:
    """bench/loadgen.py's typical message, as the API stores it after validation."""
    message = loadgen.message(n)  # keyed "from", as api/queue.py's new_job_from stores it
    return queueing.NewJob(message=message, metadata=message.pop("metadata"))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (the server process of our connection)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _print_statements(url: str, top: int = 20) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT total_exec_time + total_plan_time, calls, plans, total_plan_time,
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
               FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               ORDER BY 1 DESC LIMIT %s""", (top,)
        ).fetchall()
    print("| total ms | calls | µs/call | plans | planning µs/call | statement |\n|---|---|---|---|---|---|")
    for total_ms, calls, plans, plan_ms, text in rows:
        print(f"| {total_ms:,.0f} | {calls:,} | {total_ms / calls * 1000:,.1f} | {plans:,} | "
              f"{plan_ms / calls * 1000:,.1f} | `{text}` |")


if __name__ == "__main__":
    sys.exit(main())
