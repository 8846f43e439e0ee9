"""Claim cost against the dead rows a long REPEATABLE READ snapshot pins: one connection, no HTTP.

    .venv/bin/python bench/snapshot_claims.py [--rounds 10] [--per-round 2000] [--no-snapshot] [--no-floors]
    .venv/bin/python bench/snapshot_claims.py --wakeups [--rounds 6] [--per-round 2000] [--no-snapshot]

Starts a private PostgreSQL, migrates a fresh database, opens a connection that holds `BEGIN ISOLATION
LEVEL REPEATABLE READ; SELECT 1` for the whole run (unless --no-snapshot), then in rounds: queues
`--per-round` jobs and claims them all, 50 a claim, the way a worker does (its claim floors, each claim's
jobs then marked sent). Prints, per round, the dead rows the snapshot pins so far and the claims' mean and
p95 time, and the buffers a claim touched as the round began (EXPLAIN (ANALYZE, BUFFERS) of the claim query, in
a transaction rolled back). A claim cost that grows with the pinned rows is the stall issue 19 is about.
--wakeups measures Procrastinate's fetch the same way: rounds of wake-ups inserted, each fetched
(procrastinate_fetch_job_v2) and finished with its row deleted, as the worker does.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path.cwd() if (pathlib.Path.cwd() / "mailer").is_dir() else pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench import pg_cost  # noqa: E402
from mailer import pgcluster, store  # noqa: E402
from mailer.services import apps, queueing  # noqa: E402
from mailer.store import jobs as jobs_store  # noqa: E402
from mailer.store import migrations  # noqa: E402
from mailer.store.queries import query  # noqa: E402

SEND_BATCH = 50
INGEST_BATCH = 500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=2000)
    parser.add_argument("--no-snapshot", action="store_true", help="the same without the snapshot held")
    parser.add_argument("--no-floors", action="store_true", help="every claim walks its lanes from the start")
    parser.add_argument("--wakeups", action="store_true", help="Procrastinate's fetch of wake-ups instead")
    args = parser.parse_args(argv)
    base = pathlib.Path(tempfile.mkdtemp(prefix="mailer-snapshot-claims-"))
    base.chmod(0o755)
    cluster = pgcluster.Cluster(base_dir=base / "pg", port=pgcluster.free_port(), fast_unsafe=True)
    cluster.ensure_running()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE snap")
        url = cluster.url("snap")
        migrations.migrate(url)
        lines = (wakeups(url, args.rounds, args.per_round, snapshot=not args.no_snapshot) if args.wakeups else
                 measure(url, args.rounds, args.per_round, snapshot=not args.no_snapshot,
                         floors=None if args.no_floors else jobs_store.ClaimFloors()))
        for line in lines:
            print(line, flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def measure(url: str, rounds: int, per_round: int, *, snapshot: bool,
            floors: jobs_store.ClaimFloors | None) -> list[str]:
    """One line per round: pinned dead rows, claim ms (mean, p95), buffers of the last claim."""
    lines = ["round | pinned dead rows | claim ms mean | p95 | buffers (a claim as the round begins)"]
    with psycopg.connect(url, autocommit=True) as reader, psycopg.connect(url) as conn:
        if snapshot:
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT 1")
        app, _ = apps.create_app(conn, "bench")
        conn.commit()
        pinned = 0
        for round_no in range(rounds):
            for first in range(0, per_round, INGEST_BATCH):
                jobs = [pg_cost._job(n) for n in range(first, min(first + INGEST_BATCH, per_round))]
                queueing.accept(conn, app_id=app.id, test=False, jobs=jobs, batch=True, batch_size=SEND_BATCH)
            times: list[float] = []
            buffers = _claim_buffers(conn, floors)
            while True:
                t0 = time.perf_counter()
                with conn.transaction():
                    claim = store.claim_due_jobs(conn, limit=SEND_BATCH, floors=floors)
                claim.commit_floors()
                times.append((time.perf_counter() - t0) * 1000)
                if not claim.jobs:
                    break
                with conn.transaction():
                    store.mark_jobs_sent(conn, ids=[job.id for job in claim.jobs])
            pinned += per_round if snapshot else 0
            times.sort()
            lines.append(f"{round_no:5d} | {pinned:16d} | {statistics.mean(times):13.2f} | "
                         f"{times[int(len(times) * 0.95)]:6.2f} | {buffers}")
    return lines


def wakeups(url: str, rounds: int, per_round: int, *, snapshot: bool) -> list[str]:
    """One line per round: wake-ups fetched so far, fetch ms (mean, p95)."""
    lines = ["round | wake-ups done | fetch ms mean | p95"]
    with psycopg.connect(url, autocommit=True) as reader, psycopg.connect(url, autocommit=True) as conn:
        worker = conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()[0]  # type: ignore[index]
        if snapshot:
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT 1")
        for round_no in range(rounds):
            times: list[float] = []
            for _ in range(per_round):
                conn.execute("INSERT INTO procrastinate_jobs (queue_name, task_name) VALUES ('send', 'wake')")
                t0 = time.perf_counter()
                job = conn.execute("SELECT id FROM procrastinate_fetch_job_v2(ARRAY['send']::varchar[], %s)",
                                   [worker]).fetchone()[0]  # type: ignore[index]
                times.append((time.perf_counter() - t0) * 1000)
                conn.execute("SELECT procrastinate_finish_job_v1(%s, 'succeeded', true)", [job])
            times.sort()
            lines.append(f"{round_no:5d} | {(round_no + 1) * per_round:13d} | {statistics.mean(times):13.2f} | "
                         f"{times[int(len(times) * 0.95)]:6.2f}")
    return lines


def _claim_buffers(conn: psycopg.Connection, floors: jobs_store.ClaimFloors | None) -> str:
    """The shared buffers one claim of this round touches (EXPLAIN ANALYZE, rolled back)."""
    params = jobs_store.claim_params(limit=SEND_BATCH, max_bytes=2**31 - 1, sender_id=None,
                                     floors=floors.start() if floors else None)
    with conn.transaction(force_rollback=True):
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query("claim_due_jobs"), params).fetchall()  # type: ignore[operator]
    text = "\n".join(row[0] for row in plan)
    found = re.search(r"Buffers: shared hit=(\d+)", text)
    return found.group(1) if found else "?"


if __name__ == "__main__":
    raise SystemExit(main())
