"""What one email costs at a fixed steady rate, counted: statements (pg_stat_statements, triggers' and functions'
included), transactions, Procrastinate wake-ups, NOTIFYs, advisory-lock calls, Mailjet calls; CPU per group.

    .venv/bin/python bench/steady_counts.py [--rate 300] [--seconds 10] [--grouped]

The steady scenario's set-up (bench/steady.py, row 14): wrk POSTs single messages at `--rate` with the workers
running, the simulator at 100 ms per call posting sent + open events back. The workers take their environment
from this process's (MAILER_SEND_RUN_MAX_S=0 shows each wake-up ending after its barrier's claim).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `mailer` importable from the checkout
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402  # after the path fix above
import requests  # noqa: E402

from bench import steady, system  # noqa: E402

# Statement families worth a line of their own: (label, pattern in the normalized query text).
FAMILIES = (
    ("Procrastinate defer (a wake-up)", r"procrastinate_defer_jobs"),
    ("Procrastinate fetch", r"procrastinate_fetch_job"),
    ("Procrastinate finish", r"procrastinate_finish_job"),
    ("NOTIFY", r"pg_notify|^notify"),
    ("advisory lock (requests' shared take, senders' barrier)", r"advisory"),
    ("claim", r"take due jobs for sending"),
    ("barrier (mailer_await_wakers)", r"a sender's barrier"),
    ("record (its fence)", r"the fence of a claim's results"),
    ("rate-limit token (the app's, the Mailjet cap's)", r"rate_limit_buckets"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0, help="single POSTs a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--grouped", action="store_true", help="grouped event callbacks (else one per POST)")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs each worker process runs at once")
    args = parser.parse_args(argv)
    with system.running(2, 2, 4, pg_stats=True) as sut:
        app_id = _app_id(sut.database_url)
        with sut.web_with(MAILER_RATE_LIMIT_PER_S="2000"):
            sut.start_workers(args.concurrency)
            sut.simulator(events_url=f"{sut.web_url}/events", events_auth=system.EVENTS_AUTH,
                          grouped_events=args.grouped, latency_s=0.1)
            _measure(sut, app_id, args)
            sut.stop_workers()
    return 0


def _measure(sut: system.System, app_id: int, args: argparse.Namespace) -> None:
    sut.reset()
    script = steady._script(sut, args.connections, args.rate)
    try:
        steady._wrk(sut, script, args.connections, steady.WARMUP_S)
        meter = system.CpuMeter({"web": sut.pids(["web"]), "workers": sut.pids(sut.worker_names()),
                                 "simulator": sut.pids(["simulator"]), "postgres": [sut.postmaster_pid()]})
        with psycopg.connect(sut.database_url, autocommit=True) as conn:
            system.reset_statement_profile(sut.database_url)
            before, sim_before = _counters(conn), _sim(sut)
            started = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            meter.start()
            steady._wrk(sut, script, args.connections, args.seconds)
            cpu = meter.stop()
            ended = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            after, sim_after = _counters(conn), _sim(sut)
            sent = conn.execute("SELECT count(*) FROM job_events WHERE type = 'sent' AND at >= %s AND at < %s",
                                (started, ended)).fetchone()[0]  # type: ignore[index]
            statements = conn.execute(
                "SELECT toplevel, calls, lower(regexp_replace(query, '\\s+', ' ', 'g')) FROM pg_stat_statements"
            ).fetchall()
            _drain(conn, app_id)
    finally:
        pathlib.Path(script).unlink()
    per = max(sent, 1)
    print(f"offered {args.rate:g}/s for {args.seconds:g} s ({'grouped' if args.grouped else 'single'} events): "
          f"{sent} emails sent ({sent / args.seconds:,.0f}/s)")
    print("CPU per email (ms): " + ", ".join(f"{group} {seconds / per * 1e3:.2f}" for group, seconds in cpu.items()))
    calls = sim_after["calls"] - sim_before["calls"]
    messages = sim_after["messages"] - sim_before["messages"]
    print(f"Mailjet send calls per email {calls / per:.3f} ({messages / max(calls, 1):.1f} emails per call)")
    print(f"transactions per email (pg_stat_database, all of them) {(after['xacts'] - before['xacts']) / per:.2f}")
    print(f"wake-ups deferred per email {(after['wakeups'] - before['wakeups']) / per:.3f}")
    toplevel = sum(n for top, n, _ in statements if top)
    print(f"statements per email: {toplevel / per:.2f} sent by clients, "
          f"{sum(n for top, n, _ in statements if not top) / per:.2f} run inside functions and triggers")
    for label, pattern in FAMILIES:
        found = sum(n for _, n, text in statements if re.search(pattern, text))
        print(f"  {label}: {found / per:.3f} per email")
    print("top statements by calls (per email):")
    by_text: dict[str, int] = {}
    for top, n, text in statements:
        if top:
            by_text[text[:110]] = by_text.get(text[:110], 0) + n
    for text, n in sorted(by_text.items(), key=lambda item: -item[1])[:25]:
        print(f"  {n / per:7.3f}  {text}")


def _counters(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),"
        " (SELECT last_value FROM procrastinate_jobs_id_seq)"
    ).fetchone()
    if row is None:
        raise RuntimeError("pg_stat_database has no row for this database")
    return {"xacts": int(row[0]), "wakeups": int(row[1])}


def _sim(sut: system.System) -> dict[str, int]:
    got = requests.get(f"{sut.sim_url}/_sim/sends", timeout=60).json()
    return {"calls": int(got["calls"]), "messages": len(got["messages"])}


def _app_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT id FROM apps ORDER BY id LIMIT 1").fetchone()[0])  # type: ignore[index]


def _drain(conn: psycopg.Connection, app_id: int) -> None:
    def drained() -> bool:
        row = conn.execute("SELECT EXISTS (SELECT FROM jobs_live WHERE app_id = %s)", (app_id,)).fetchone()
        return row is not None and not row[0]
    system.wait_until(drained, steady.DRAIN_TIMEOUT_S, "the backlog drained", interval=0.5)


if __name__ == "__main__":
    sys.exit(main())
