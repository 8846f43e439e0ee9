"""Row 11: send throughput while a long REPEATABLE READ snapshot is held open, against the same run without.

Both runs are 3b (all queued first with one send_at, then sent: bench/measure.py end_to_end with drain), on
emptied tables with freshly started workers. In the second, a session that did `BEGIN ISOLATION LEVEL
REPEATABLE READ; SELECT count(*) FROM jobs` (an analyst's query, a backup) stays open from before the
queueing to the last email sent: vacuum can remove none of the rows the run changes. The claim latency is
the workers' own histogram (mailer_send_claim_seconds), read from their metrics files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Iterator

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess

from bench import measure
from bench.system import System

CLAIM_HISTOGRAM = "mailer_send_claim_seconds"
READER = "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobs"  # an analyst's, a backup's


@dataclasses.dataclass(frozen=True)
class Run:
    """One run: its throughput, the claims' latency, and what the snapshot pinned by its end."""

    throughput: measure.Throughput
    claim_p50_ms: float
    claim_p95_ms: float
    claims: int
    dead_rows: int  # jobs' dead row versions at the end (pg_stat_user_tables)
    snapshot_s: float  # how long the snapshot had been held at the end (0 without)


def measure_both(system: System, emails: int, app_id: int, concurrency: int) -> tuple[Run, Run]:
    """The run without a snapshot, then with one held."""
    return (_run(system, emails, app_id, concurrency, held=False),
            _run(system, emails, app_id, concurrency, held=True))


def _run(system: System, emails: int, app_id: int, concurrency: int, *, held: bool) -> Run:
    system.reset()
    metrics_dir = tempfile.mkdtemp(prefix="mailer-bench-metrics-")
    try:
        system.start_workers(concurrency, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        try:
            with _snapshot(system.database_url, held) as age:
                throughput = measure.end_to_end(system, emails, app_id, drain=True)
                snapshot_s = age()
            dead_rows = _dead_job_rows(system.database_url)
        finally:
            system.stop_workers()
        p50, p95, claims = claim_quantiles(metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return Run(throughput, p50 * 1e3, p95 * 1e3, claims, dead_rows, snapshot_s)


@contextlib.contextmanager
def _snapshot(url: str, held: bool) -> Iterator[Callable[[], float]]:
    """A session holding a REPEATABLE READ snapshot (when `held`); yields a function giving its age in s."""
    if not held:
        yield lambda: 0.0
        return
    with psycopg.connect(url, autocommit=True) as reader:
        for statement in READER.split("; "):
            reader.execute(statement)  # type: ignore[arg-type]  # our own constant

        def age() -> float:
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute("SELECT extract(epoch FROM now() - xact_start)::float8 FROM pg_stat_activity "
                                   "WHERE pid = %s", [reader.info.backend_pid]).fetchone()
            return float(row[0]) if row else 0.0

        yield age
        reader.execute("ROLLBACK")


def _dead_job_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        # The partitions: the parent `jobs` has no row of its own, so no statistics (0028). The hot set is where
        # every claim and every move to jobs_done leaves its dead versions.
        row = conn.execute("SELECT sum(n_dead_tup) FROM pg_stat_user_tables "
                           "WHERE relname = 'jobs_live' OR relname LIKE 'jobs\\_done%'").fetchone()
    return int(row[0] or 0) if row else 0


def claim_quantiles(metrics_dir: str) -> tuple[float, float, int]:
    """p50 and p95 (s) of the workers' claims, interpolated in their histogram's buckets, and their count."""
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    buckets: list[tuple[float, float]] = []
    for family in registry.collect():
        if family.name == CLAIM_HISTOGRAM:
            buckets = sorted((float(sample.labels["le"]), sample.value) for sample in family.samples
                             if sample.name == f"{CLAIM_HISTOGRAM}_bucket")
    total = buckets[-1][1] if buckets else 0.0
    return _quantile(buckets, 0.5), _quantile(buckets, 0.95), int(total)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower
