"""GET /logs and /stats at a million jobs: load them fast, then EXPLAIN ANALYZE every query the API runs.

    .venv/bin/python -m bench.logs_explain [--jobs 1000000]

Starts a private PostgreSQL (mailer.pgcluster) in a temporary folder, migrates it, loads `--jobs` jobs for
one app plus a few smaller apps, and prints each query's plan (the indexes it uses) and its execution
time. tests/integration/test_logs_explain.py runs the same load and the same checks at a smaller size.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import pathlib
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

import psycopg

from bench import history
from mailer.store import logs as store_logs
from mailer.store.queries import query

# Addresses with a known number of jobs (see load_jobs).
RARE_ADDRESS = "user123@example.org"  # the big app's jobs go round-robin to ADDRESSES of these
ADDRESSES = 20_000
IN_APP_HEAVY_ADDRESS = "ops@example.org"  # cc of every 10th job of the big app
CROSS_APP_HEAVY_ADDRESS = "shared@example.org"  # every job of the other apps, and a few of the big app's
STEP = dt.timedelta(seconds=30)  # between two jobs of the big app, going back in time

_LOAD_JOBS = """
INSERT INTO jobs (id, app_id, status, priority, message, metadata, run_at, created_at, updated_at)
SELECT {uuid7}, %(app_id)s,
       CASE WHEN i %% 100 < 90 THEN 'sent' WHEN i %% 100 < 95 THEN 'failed' WHEN i %% 100 < 97 THEN 'cancelled'
            WHEN i %% 100 < 98 THEN 'suppressed' WHEN i %% 100 < 99 THEN 'queued' ELSE 'scheduled' END,
       CASE WHEN i %% 10 = 0 THEN 'bulk' ELSE 'transactional' END,
       '{"subject": "Your invoice", "text": "hello"}'::jsonb,
       CASE WHEN i %% 10 = 0 THEN '{}'::jsonb
            ELSE jsonb_build_object('order_id', %(order_base)s + i, 'campaign', 'c' || (i %% 50)) END,
       %(now)s - i * %(step)s, %(now)s - i * %(step)s, %(now)s - i * %(step)s + interval '2 seconds'
FROM generate_series(1, %(jobs)s) AS i
""".replace("{uuid7}", history.uuid7_at("(%(now)s - i * %(step)s)"))

# One recipient per job (round-robin over ADDRESSES for the big app), an extra cc on some jobs.
_LOAD_RECIPIENTS = """
INSERT INTO recipients (job_id, kind, position, email, status)
SELECT id, 'to', 0,
       CASE WHEN %(round_robin)s THEN 'user' || (n %% %(addresses)s) || '@example.org' ELSE %(shared)s END,
       CASE status WHEN 'sent' THEN 'delivered' WHEN 'failed' THEN 'failed' WHEN 'suppressed' THEN 'suppressed'
            ELSE 'pending' END
FROM (SELECT id, status, row_number() OVER () AS n FROM jobs WHERE app_id = %(app_id)s) AS j
UNION ALL
SELECT id, 'cc', 0, CASE WHEN n %% 100000 = 7 THEN %(shared)s ELSE %(ops)s END, 'pending'
FROM (SELECT id, row_number() OVER () AS n FROM jobs WHERE app_id = %(app_id)s) AS j
WHERE %(round_robin)s AND (n %% 10 = 0 OR n %% 100000 = 7)
"""


@dataclasses.dataclass(frozen=True)
class Loaded:
    app_id: int
    other_app_ids: list[int]
    jobs: int
    seconds: float


def load_jobs(
    conn: psycopg.Connection, *, jobs: int, other_apps: int = 3, other_jobs: int = 20_000, app_id: int | None = None
) -> Loaded:
    """Load `jobs` jobs (with recipients) for an app (`app_id`, or a new one) and `other_jobs` for each of
    `other_apps` new apps.

    Fast: in one transaction, foreign-key checks are off (session_replication_role = replica, with
    mailer's counter trigger set to fire anyway), recipient_addresses is filled as insert_jobs would, and
    the secondary indexes are dropped and built again after the load.
    """
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    with conn.transaction():
        apps = [] if app_id is None else [app_id]
        for _ in range(1 + other_apps - len(apps)):
            name = f"bench-{time.time_ns()}"
            row = conn.execute(
                "INSERT INTO apps (name, key_id, key_hash) VALUES (%s, %s, '\\x00') RETURNING id", (name, name)
            ).fetchone()
            apps.append(row[0])  # type: ignore[index]
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute("ALTER TABLE jobs ENABLE ALWAYS TRIGGER job_counts_on_insert")
        conn.execute(history.ENSURE_MONTHS, {"first_month": now - STEP * jobs})
        indexes = conn.execute(
            """SELECT c.relname, pg_get_indexdef(c.oid)
               FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
               WHERE t.relname IN ('jobs', 'recipients', 'recipient_addresses') AND NOT x.indisunique"""
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        for n, app_id in enumerate(apps):
            count = jobs if n == 0 else other_jobs
            step = STEP if n == 0 else STEP * (jobs / other_jobs)  # every app spans the same days
            conn.execute(_LOAD_JOBS, {"app_id": app_id, "jobs": count, "now": now, "step": step,
                                      "order_base": n * 10_000_000})
            conn.execute(_LOAD_RECIPIENTS, {"app_id": app_id, "round_robin": n == 0, "addresses": ADDRESSES,
                                            "shared": CROSS_APP_HEAVY_ADDRESS, "ops": IN_APP_HEAVY_ADDRESS})
            conn.execute(history.RECIPIENT_ADDRESSES, {"app_id": app_id})
        for _, definition in indexes:
            conn.execute(definition.replace(" ON ONLY ", " ON "))  # a partitioned parent's: for every partition
        conn.execute("ALTER TABLE jobs ENABLE TRIGGER job_counts_on_insert")
    # What autovacuum would do soon after such a load: statistics, and the visibility map.
    for table in ("jobs", "recipients", "recipient_addresses", "job_counts"):
        conn.execute(f"VACUUM ANALYZE {table}")
    return Loaded(app_id=apps[0], other_app_ids=apps[1:], jobs=jobs, seconds=time.perf_counter() - started)


def log_cases(now: dt.datetime) -> dict[str, store_logs.LogFilters]:
    """The first page of /logs with no filter, each filter, and a few combinations."""
    filters = store_logs.LogFilters
    day = now - dt.timedelta(days=30)
    since, until = day - dt.timedelta(days=1), day
    campaign = {"campaign": "c7"}
    return {
        "no filter": filters(limit=51),
        "cursor (a page deep in the past)": filters(limit=51, before=(day, uuid.UUID(int=0))),
        "status=failed": filters(limit=51, status="failed"),
        "status=queued (rare)": filters(limit=51, status="queued"),
        "since..until (one day)": filters(limit=51, since=since, until=until),
        "since only": filters(limit=51, since=since),
        "recipient (rare)": filters(limit=51, recipient=RARE_ADDRESS.upper()),
        "recipient (cc of every 10th job)": filters(limit=51, recipient=IN_APP_HEAVY_ADDRESS),
        "recipient (common in other apps)": filters(limit=51, recipient=CROSS_APP_HEAVY_ADDRESS),
        "recipient (unknown)": filters(limit=51, recipient="nobody@example.org"),
        "metadata order_id (unique)": filters(limit=51, metadata={"order_id": 123_457}),
        "metadata campaign (2%)": filters(limit=51, metadata=campaign),
        "metadata (no match)": filters(limit=51, metadata={"campaign": "nope"}),
        "status + since..until": filters(limit=51, status="failed", since=since, until=until),
        "status + recipient": filters(limit=51, status="failed", recipient=IN_APP_HEAVY_ADDRESS),
        "recipient + since..until": filters(limit=51, recipient=IN_APP_HEAVY_ADDRESS, since=since, until=until),
        "metadata + since..until": filters(limit=51, metadata=campaign, since=since, until=until),
        # the slowest kind: two broad filters that never match together (no failed job is in campaign c7)
        "status + metadata (never together)": filters(limit=51, status="failed", metadata=campaign),
    }


def counter_cases(app_id: int, now: dt.datetime) -> dict[str, tuple[str, dict[str, Any]]]:
    """The counter queries: today (/logs) and a year of days (/stats)."""
    year = {"app_id": app_id, "since": now.date() - dt.timedelta(days=365), "until": now.date()}
    return {"today counters": ("get_today_counts", {"app_id": app_id}), "stats, 366 days": ("list_daily_counts", year)}


def explain(conn: psycopg.Connection, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, FORMAT JSON) of a named query, planned as the API plans it."""
    with conn.transaction():
        store_logs.force_custom_plans(conn)
        sql = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query(name)
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]  # named queries are trusted files
    return row[0][0]  # type: ignore[index,no-any-return]


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a plan, depth first."""
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


def describe(plan: dict[str, Any]) -> str:
    """The scans of a plan, e.g. `Index Scan jobs_app_created_idx`."""
    scans = [node for node in plan_nodes(plan["Plan"]) if "Scan" in node["Node Type"]]
    return ", ".join(f"{node['Node Type']} {node.get('Index Name') or node.get('Relation Name')}" for node in scans)


def all_cases(conn: psycopg.Connection, app_id: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every query to check, as (named query, parameters)."""
    now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    cases = {name: store_logs.logs_query(app_id=app_id, filters=f) for name, f in log_cases(now).items()}
    return {**cases, **counter_cases(app_id, now)}


def main(argv: list[str] | None = None) -> int:
    from mailer import pgcluster
    from mailer.store import migrations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    base = pathlib.Path(tempfile.mkdtemp(prefix="mailer-bench-logs-"))
    cluster = pgcluster.Cluster(base_dir=base, port=pgcluster.free_port(), fast_unsafe=True)
    try:
        cluster.ensure_running()
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        migrations.migrate(cluster.url("bench"))
        with psycopg.connect(cluster.url("bench"), autocommit=True) as conn:
            loaded = load_jobs(conn, jobs=args.jobs)
            print(f"loaded {loaded.jobs:,} jobs (+{len(loaded.other_app_ids)} apps) in {loaded.seconds:.1f} s")
            for name, (query_name, params) in all_cases(conn, loaded.app_id).items():
                explain(conn, query_name, params)  # warm the cache, as a running service has it
                plan = explain(conn, query_name, params)
                print(f"{plan['Execution Time']:8.2f} ms  {plan['Plan'].get('Actual Rows', 0):>3} rows"
                      f"  {name:36} {describe(plan)}")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
