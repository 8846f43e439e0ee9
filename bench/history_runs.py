"""Measurements 6 and 11: sending with ten months of history kept, at two shared_buffers; dropping a month."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import psycopg

from bench import history, report, retention_drop
from bench.measure import Throughput
from bench.system import System

# PostgreSQL's default, and what the rest of the benchmark runs with (run.py's PG_SETTINGS).
SHARED_BUFFERS = ("128MB", "2GB")
TARGET = 0.9  # of the empty tables' figure at the same setting
# Each figure of 6 is the median of this many runs: one 4-second run varies by ±10 % on a 2-core machine,
# as much as the margin the target leaves.
REPEATS = 3
# Runs 3 and 3b (their keys in the run's table) with a label suffix and whether the tables are kept.
BothRuns = Callable[[str, bool], dict[str, Throughput]]


def shared_buffers(sut: System) -> str:
    """The server's shared_buffers as it would be written in a setting ('128MB')."""
    with psycopg.connect(sut.database_url) as conn:
        return str(conn.execute("SELECT current_setting('shared_buffers')").fetchone()[0])  # type: ignore[index]


def use_shared_buffers(sut: System, value: str, say: Callable[[str], None]) -> None:
    """Restart PostgreSQL (and the web server) with shared_buffers = value, unless it already has it."""
    with psycopg.connect(sut.database_url) as conn:
        same = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes(%s)",
                            (value,)).fetchone()[0]  # type: ignore[index]
    if not same:
        sut.restart_postgres({"shared_buffers": value})
        say(f"PostgreSQL restarted with shared_buffers {value}")


def throughput(sut: System, jobs: int, app_id: int, concurrency: int, both_runs: BothRuns,
               say: Callable[[str], None], repeats: int = REPEATS) -> list[report.Row]:
    """6: runs 3 and 3b on empty tables, then with `jobs` historic jobs, at each of SHARED_BUFFERS (each the
    median of the `repeats` runs that `both_runs` makes).

    The history stays loaded afterwards (for 11) and shared_buffers is as it was before."""
    configured = shared_buffers(sut)
    # The setting in force first, so that the four groups of runs need two restarts.
    order = sorted(SHARED_BUFFERS, key=lambda value: value != configured)
    empty: dict[str, dict[str, Throughput]] = {}
    for value in order:
        use_shared_buffers(sut, value, say)
        sut.start_workers(concurrency)
        empty[value] = both_runs(f", empty tables, shared_buffers {value}", False)
        sut.stop_workers()
    seconds = history.load(sut.database_url, app_id, jobs, say)
    say(f"loaded {jobs:,} historic jobs in {seconds:.0f} s (shared_buffers {order[-1]})")
    with psycopg.connect(sut.database_url) as conn:
        size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
    rows = [report.Row(
        f"6. History load: {jobs:,} sent jobs over {history.MONTHS} months ({jobs // history.MONTHS:,} a month, "
        "each with its recipient, address, 3 audit events and Mailjet event; set-based SQL, one statement a month; "
        f"shared_buffers {order[-1]})",
        f"{seconds:.0f} s ({jobs / seconds:,.0f} jobs/s, indexes and VACUUM ANALYZE included); database "
        f"{retention_drop.gib(size)}", target="a figure to record")]
    for value in reversed(order):
        use_shared_buffers(sut, value, say)
        sut.start_workers(concurrency)
        big = both_runs(f", {jobs:,} historic jobs, shared_buffers {value}", True)
        sut.stop_workers()
        for (key, run), (_, base), label in zip(big.items(), empty[value].items(), ("3", "3b"), strict=True):
            ratio = run.per_s / base.per_s
            say(f"{key}: {ratio:.0%} of empty tables")
            rows.append(report.Row(
                f"6. History: {label} with {jobs:,} historic jobs, shared_buffers {value}"
                + (" (PostgreSQL's default)" if value == SHARED_BUFFERS[0] else ""),
                f"{run.per_s:,.0f} emails/s (median of {repeats} runs; {run.window_s:.2f} s; {run.duplicates} "
                "duplicates; MAILER_RATE_LIMIT_PER_S=0 and no event callbacks, as in every row)",
                f"empty tables, shared_buffers {value}: {base.per_s:,.0f} emails/s (median of {repeats})",
                f"{ratio:.0%}",
                f"≥ {TARGET:.0%} of empty", ratio >= TARGET and run.duplicates == 0))
    use_shared_buffers(sut, configured, say)
    return rows


def retention(sut: System) -> list[report.Row]:
    """11: the oldest month of the loaded history dropped from every partitioned parent."""
    month = history.months(dt.datetime.now(dt.UTC).date())[0]
    got = retention_drop.measure(sut.database_url, month, history.add_months(month, 1))
    name = (f"11. Retention: dropping the month {month:%Y-%m} ({got.jobs:,} jobs, with their recipients and events; "
            "the drops alone, run by the benchmark: no load meanwhile)")
    if not got.parents:
        return [report.Row(name, "not partitioned: no parent in month_partitioned_tables, nothing dropped",
                           target="< 1 s, no dead rows")]
    before, after = got.before, got.after
    result = (f"{got.seconds:.2f} s ({got.dropped} partitions of {len(got.parents)} parents); {got.jobs_left} of its "
              f"jobs left; dead rows {before.dead_rows:,} before, {after.dead_rows:,} after")
    if got.error:
        result = f"drop failed after {got.dropped} partitions: {got.error}; {result}"
    sizes = (f"history tables {retention_drop.gib(before.table_bytes)} + indexes "
             f"{retention_drop.gib(before.index_bytes)} before, {retention_drop.gib(after.table_bytes)} + "
             f"{retention_drop.gib(after.index_bytes)} after")
    ok = not got.error and got.seconds < 1 and got.jobs_left == 0 and after.dead_rows <= before.dead_rows
    return [report.Row(name, result, sizes, target="< 1 s, no dead rows", ok=ok)]
