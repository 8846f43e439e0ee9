"""mailer's benchmark: ingest, end to end against the naive design, pickup latency, events, history, and more.

    .venv/bin/python bench/run.py [--quick] [--write]

Starts a private PostgreSQL (fsync on), gunicorn, mailer's workers and the Mailjet simulator (100 ms per
call) as processes, runs every measurement, prints the table; --write also records it in BENCHMARKS.md.
--quick shrinks every size (a smoke test of the whole benchmark in about three minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import signal
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `mailer` importable from the checkout
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402  # after the path fix above

from bench import (  # noqa: E402
    crash_recovery,
    history,
    history_runs,
    loadgen,
    long_snapshot,
    measure,
    outage,
    report,
    steady,
    system,
    webhook_fan_out,
)

MEASUREMENTS = ("ingest", "e2e", "naive", "steady", "history", "retention", "big-events", "webhooks", "crash",
                "snapshot", "outage", "pgbouncer")
ALIASES = {"scale": "history"}  # the name measurement 6 had while it loaded a million jobs


@dataclasses.dataclass(frozen=True)
class Sizes:
    ingest_s: float
    emails: int
    naive_emails: int
    pickups: int
    history: int
    big_events: int
    fan_outs: int
    crash_emails: int  # queued for measurement 9: 2,000 of them in flight in the worker killed
    steady_s: float  # the measured window of each steady rate (after a warm-up)
    steady_lines: tuple[tuple[int, bool], ...]  # (wrk connections, grouped events) of the steady scenario
    steady_attempts: int  # rates tried per steady line
    steady_warmup_s: float
    repeats: int  # runs of each figure of 6, the median kept
    outage_s: float  # how long PostgreSQL stays down in 10


FULL = Sizes(
    ingest_s=15, emails=20_000, naive_emails=20_000, pickups=50, history=10_000_000, big_events=50_000,
    fan_outs=40, crash_emails=2_400, steady_s=20, steady_lines=((8, False), (32, False), (8, True), (32, True)),
    steady_attempts=steady.ATTEMPTS, steady_warmup_s=steady.WARMUP_S, repeats=history_runs.REPEATS,
    outage_s=outage.DOWN_S,
)
# A smoke test of every measurement: small sizes, one run each, short waits.
QUICK = Sizes(ingest_s=2, emails=2_000, naive_emails=500, pickups=10, history=100_000, big_events=5_000, fan_outs=5,
              crash_emails=400, steady_s=3, steady_lines=((8, False), (8, True)), steady_attempts=1, steady_warmup_s=1,
              repeats=1, outage_s=3)
# A quarter of a 24 GB machine would be 6 GB; 2 GB leaves room for everything else the benchmark runs.
# Measurement 6 runs at PostgreSQL's 128 MB default as well (history_runs.SHARED_BUFFERS).
PG_SETTINGS = ["shared_buffers=2GB"]
CLIENTS = 8  # concurrent clients of the ingest measurements and of the raw INSERT baseline
BATCH_CLIENTS = 4
EVENT_CLIENTS = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the benchmark")
    parser.add_argument("--write", action="store_true", help="record the results in BENCHMARKS.md")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS + tuple(ALIASES), default=list(MEASUREMENTS))
    parser.add_argument("--worker-processes", type=int, default=2, help="mailer (and naive) worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs each worker process runs at once")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (WEB_CONCURRENCY)")
    parser.add_argument("--web-threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--pg-set", action="append", metavar="NAME=VALUE",
                        help=f"a PostgreSQL setting (ALTER SYSTEM); repeatable; default {' '.join(PG_SETTINGS)}")
    parser.add_argument("--pgbouncer", action="store_true",
                        help="web and workers through PgBouncer in transaction mode (its CPU is not counted)")
    parser.add_argument("--pg-stats", action="store_true",
                        help="load pg_stat_statements and print the costliest statements of each measurement")
    args = parser.parse_args(argv)
    args.pg_set = PG_SETTINGS if args.pg_set is None else args.pg_set
    args.only = [ALIASES.get(name, name) for name in args.only]
    if args.pgbouncer and "pgbouncer" in args.only:  # the whole run is behind it: there is no direct to compare
        args.only.remove("pgbouncer")
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C: every process started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = QUICK if args.quick else FULL
    loadgen.ensure_wrk()
    pg = ", ".join(args.pg_set) or "defaults"
    config = (f"{report.interpreter()}; gunicorn {args.web_workers} workers x {args.web_threads} threads; "
              f"{args.worker_processes} worker processes x concurrency {args.concurrency} (mailer and naive alike); "
              f"PostgreSQL 15 ({pg}; fsync on{'; through PgBouncer, transaction mode' if args.pgbouncer else ''}); "
              "simulator 100 ms per call, no event callbacks (but in 3c and 14); "
              "MAILER_RATE_LIMIT_PER_S=0, other settings default")
    print(config, flush=True)
    rows: list[report.Row] = []
    runs: dict[str, measure.Throughput] = {}
    steady_lines: list[steady.Line] = []
    pg_settings = dict(item.split("=", 1) for item in args.pg_set)
    with system.running(args.worker_processes, args.web_workers, args.web_threads, args.pg_stats,
                        pg_settings, args.pgbouncer) as sut:
        global _PG_STATS  # a flag for the whole run
        _PG_STATS = sut.database_url if args.pg_stats else ""
        with psycopg.connect(sut.database_url) as conn:
            app_id = conn.execute("SELECT id FROM apps WHERE name = 'bench'").fetchone()[0]  # type: ignore[index]
        if "ingest" in args.only:
            rows += _ingest(sut, sizes)
        if {"e2e", "naive"} & set(args.only):
            rows += _end_to_end(sut, sizes, args, app_id, runs)
        if "steady" in args.only:
            steady_rows, steady_lines = _steady(sut, sizes, args, app_id)
            rows += steady_rows
        if "pgbouncer" in args.only:  # before history: its resets would empty the loaded tables
            rows += _pgbouncer(sut, sizes, args, app_id, runs)
        if "history" in args.only:
            rows += history_runs.throughput(
                sut, sizes.history, app_id, args.concurrency,
                lambda suffix, keep: _both_runs(sut, sizes, app_id, runs, suffix, keep, sizes.repeats), _say,
                sizes.repeats)
        if "retention" in args.only:  # on the history just loaded, or on its own
            if "history" not in args.only:
                seconds = history.load(sut.database_url, app_id, sizes.history, _say)
                _say(f"loaded {sizes.history:,} historic jobs in {seconds:.0f} s")
            rows += history_runs.retention(sut)
        if {"e2e", "naive", "history", "pgbouncer"} & set(args.only):
            # A sender that gave up may have left email for the recovery sweep (sql/migrations/0015): expect none.
            gave_up = sum(log.read_text(errors="replace").count("gave up waiting")
                          for log in sut.log_dir.glob("worker*.log"))
            _say(f"senders that gave up waiting for the requests that woke them: {gave_up}")
        mailer_runs = [run for name, run in runs.items() if name != NAIVE]
        if mailer_runs:
            rss = max(run.worker_peak_rss_mb for run in mailer_runs)
            rows.append(report.Row("Worker memory (peak RSS of a worker process)", f"{rss:.0f} MB",
                                   target="< 200 MB", ok=rss < 200))
        if "big-events" in args.only:
            rows += _big_events(sut, sizes)
        if "webhooks" in args.only:
            rows += _webhooks(sut, sizes, app_id)
        if "crash" in args.only:
            rows += _crash(sut, sizes)
        if "snapshot" in args.only:
            rows += _snapshot(sut, sizes, args, app_id)
        if "outage" in args.only:  # last: it restarts PostgreSQL
            rows += _outage(sut, args, sizes)
    print()
    table = report.results_table(rows)
    cpu = report.cpu_table(runs) if runs else ""
    steady_cpu = report.steady_cpu_table(steady_lines) if steady_lines else ""
    print(table, cpu, steady_cpu, sep="\n\n")
    if args.write:
        command = ".venv/bin/python bench/run.py --write" + (" --quick" if args.quick else "") + (
            " --pgbouncer" if args.pgbouncer else "") + (
            "" if set(args.only) == set(MEASUREMENTS) else " --only " + " ".join(args.only)) + "".join(
            f" --pg-set {item}" for item in args.pg_set if args.pg_set != PG_SETTINGS)
        notes = f"Sizes: {dataclasses.asdict(sizes)}."
        report.write(ROOT / "BENCHMARKS.md", report.document(command, config, rows, runs, notes, steady_lines))
        print("\nwritten to BENCHMARKS.md")
    return 0


def _ingest(sut: system.System, sizes: Sizes) -> list[report.Row]:
    raw, raw_p50, raw_p99 = loadgen.raw_insert_rate(sut.database_url, CLIENTS, sizes.ingest_s)
    _say(f"raw INSERT commits: {raw:,.0f}/s (p50 {raw_p50:.1f} ms, p99 {raw_p99:.1f} ms)")
    run = measure.ingest_single(sut, sizes.ingest_s, CLIENTS)
    single, single_cpu = run.wrk, _cpu_per(run, "request")
    p50, p99 = single.latency_ms.get("50", float("nan")), single.latency_ms.get("99", float("nan"))
    _say(f"single ingest: {single.per_s:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms; {single_cpu}")
    run = measure.stack_floor(sut, sizes.ingest_s, CLIENTS)
    floor, floor_cpu = run.wrk, _cpu_per(run, "request")
    _say(f"stack floor (gunicorn + Flask, one INSERT per POST): {floor.per_s:,.0f} req/s; {floor_cpu}")
    sut.reset()
    run = measure.ingest_batch(sut, sizes.ingest_s, BATCH_CLIENTS)
    batch, batch_cpu = run.wrk, _cpu_per(run, "email", measure.BATCH)
    per_s = batch.per_s * measure.BATCH
    _say(f"batch ingest: {per_s:,.0f} emails/s ({batch.per_s:.1f} req/s, p50 {batch.latency_ms.get('50', 0):.0f} ms); "
         f"{batch_cpu}")
    sut.reset()
    # Right after the same batches without a template, on the same emptied tables: the templates' cost alone.
    template_id = measure.create_receipt_template(sut)
    run = measure.ingest_batch_templated(sut, sizes.ingest_s, BATCH_CLIENTS, template_id)
    templated, templated_cpu = run.wrk, _cpu_per(run, "email", measure.BATCH)
    templated_per_s = templated.per_s * measure.BATCH
    ratio = templated_per_s / per_s if per_s else float("nan")
    _say(f"templated batch ingest: {templated_per_s:,.0f} emails/s ({templated.per_s:.1f} req/s, p50 "
         f"{templated.latency_ms.get('50', 0):.0f} ms); {templated_cpu}; {ratio:.0%} of batch ingest")
    sut.reset()
    # The same receipts rendered beforehand and sent as html/text: 2b's messages are 25 times row 2's in size,
    # so this row separates what rendering costs from what storing a 5 KB message costs.
    template_id = measure.create_receipt_template(sut)
    run = measure.ingest_batch_rendered(sut, sizes.ingest_s, BATCH_CLIENTS, template_id)
    rendered, rendered_cpu = run.wrk, _cpu_per(run, "email", measure.BATCH)
    rendered_per_s = rendered.per_s * measure.BATCH
    rendered_ratio = templated_per_s / rendered_per_s if rendered_per_s else float("nan")
    _say(f"rendered batch ingest: {rendered_per_s:,.0f} emails/s ({rendered.per_s:.1f} req/s, p50 "
         f"{rendered.latency_ms.get('50', 0):.0f} ms); {rendered_cpu}; 2b is {rendered_ratio:.0%} of it")
    sut.reset()
    return [
        report.Row(f"1. Ingest, single message ({CLIENTS} clients, {sizes.ingest_s:g} s): ingest alone, workers "
                   "stopped, MAILER_RATE_LIMIT_PER_S=0 (row 14 is with the workers sending and the limit on)",
                   f"{single.per_s:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms; {single_cpu}",
                   f"{raw:,.0f} single-row INSERT commits/s (p99 {raw_p99:.1f} ms); the stack's floor, gunicorn + "
                   f"Flask with one such INSERT per POST: {floor.per_s:,.0f} req/s ({floor_cpu})",
                   f"{single.per_s / raw:.2f} ({single.per_s / floor.per_s:.2f} of the floor)",
                   "≥ 1,000 req/s, p99 < 50 ms", single.per_s >= 1000 and p99 < 50),
        report.Row(f"2. Ingest, batches of {measure.BATCH} ({BATCH_CLIENTS} clients, {sizes.ingest_s:g} s): ingest "
                   "alone, workers stopped, MAILER_RATE_LIMIT_PER_S=0",
                   f"{per_s:,.0f} emails/s ({batch.per_s:.1f} req/s, p50 {batch.latency_ms.get('50', 0):.0f} ms); "
                   f"{batch_cpu}", target="≥ 10,000 emails/s", ok=per_s >= 10_000),
        report.Row(f"2b. Ingest, batches of {measure.BATCH} naming a stored template, each message with its own "
                   f"variables (a 3 KB html receipt looping over 5 items, a text part, a JSON Schema; "
                   f"{BATCH_CLIENTS} clients, {sizes.ingest_s:g} s), right after 2: ingest alone, workers stopped, "
                   "MAILER_RATE_LIMIT_PER_S=0",
                   f"{templated_per_s:,.0f} emails/s ({templated.per_s:.1f} req/s, p50 "
                   f"{templated.latency_ms.get('50', 0):.0f} ms); {templated_cpu}",
                   f"2: {per_s:,.0f} emails/s ({batch_cpu})", f"{ratio:.0%}", "≥ 50 % of 2", ratio >= 0.5),
        report.Row(f"2c. Ingest, 2b's 500 receipts rendered beforehand and sent as subject/html/text (the same "
                   f"stored content without a template; {BATCH_CLIENTS} clients, {sizes.ingest_s:g} s), right after 2b:"
                   " ingest alone, workers stopped, MAILER_RATE_LIMIT_PER_S=0",
                   f"{rendered_per_s:,.0f} emails/s ({rendered.per_s:.1f} req/s, p50 "
                   f"{rendered.latency_ms.get('50', 0):.0f} ms); {rendered_cpu}",
                   f"2b: {templated_per_s:,.0f} emails/s", f"2b is {rendered_ratio:.0%} of 2c",
                   "≥ 50 % (2b of 2c)", rendered_ratio >= 0.5),
    ]


def _big_events(sut: system.System, sizes: Sizes) -> list[report.Row]:
    """7: one grouped POST /events of many events (unknown MessageIDs: stored, none matched)."""
    sut.reset()
    seconds, before, peak, stored = measure.big_events(sut, sizes.big_events)
    _say(f"one POST of {sizes.big_events:,} events: {seconds:.1f} s, web worker RSS {before:.0f} -> {peak:.0f} MB "
         f"peak; {stored:,} stored")
    ok = stored == sizes.big_events and seconds < 30 and peak < 300
    return [report.Row(f"7. Events, one grouped POST of {sizes.big_events:,} (chunks of 1,000 per transaction; workers "
                       "stopped, MessageIDs unknown: stored, none applied)",
                       f"{seconds:.1f} s ({sizes.big_events / seconds:,.0f} events/s); web worker peak RSS "
                       f"{peak:.0f} MB (from {before:.0f} MB)", target="200 for all, < 30 s, peak RSS < 300 MB",
                       ok=ok)]


def _webhooks(sut: system.System, sizes: Sizes, app_id: int) -> list[report.Row]:
    sut.reset()
    fan = webhook_fan_out.measure(sut.database_url, sut.web_url, sut.auth, app_id, sizes.fan_outs)
    sut.reset()
    cost = {count: f"{p50:.1f} ms (p90 {p90:.1f})" for count, (p50, p90) in fan.change_ms.items()}
    _say(f"webhook fan-out: status change of {webhook_fan_out.RECIPIENTS} recipients {cost}; expansion "
         f"{fan.deliveries_per_s:,.0f} deliveries/s, largest batch {fan.largest_batch_ms:.0f} ms")
    # Bounded whatever the endpoint count: 150 endpoints cost about what 10 do. (Some endpoints against none
    # adds the 50 message bodies, built and stored as before: work per recipient, not per endpoint.)
    ten, many = fan.change_ms[10][0], fan.change_ms[150][0]
    return [
        report.Row(f"8. Webhook fan-out: the status change of a {webhook_fan_out.RECIPIENTS}-recipient job "
                   f"(p50 of {sizes.fan_outs}; workers stopped, the change written by the benchmark, "
                   "no delivery posted)",
                   f"150 endpoints: {cost[150]}",
                   f"10 endpoints: {cost[10]}; none: {cost[0]}", f"{many / ten:.1f}x" if ten else "",
                   "150 endpoints ≤ 2x 10 endpoints", many <= 2 * ten),
        report.Row("8b. Webhook fan-out: the worker's expansion into deliveries (its SQL function, called by the "
                   "benchmark with the workers stopped; no delivery posted)",
                   f"{fan.deliveries_per_s:,.0f} deliveries/s ({fan.expanded:,}; batches of "
                   f"{webhook_fan_out.EXPAND_BATCH}, the largest {fan.largest_batch_ms:.0f} ms)",
                   target="≥ 10,000 deliveries/s", ok=fan.deliveries_per_s >= 10_000),
    ]


def _crash(sut: system.System, sizes: Sizes) -> list[report.Row]:
    rows = []
    for label, cap in (("9", None), ("9b", crash_recovery.RAISED_CAP)):
        got = crash_recovery.run(sut, sizes.crash_emails, cap)
        _say(f"kill -9 ({label}): {got.in_flight} in flight; claimable again after {got.claimable_s:.1f} s, "
             f"the last sent {got.last_sent_s:.1f} s after the kill; {got.duplicates} duplicates")
        cap_text = ("MAILER_MAILJET_MAX_CALLS_PER_S default 100: the lookups alone need 20 s of it" if cap is None
                    else f"MAILER_MAILJET_MAX_CALLS_PER_S={cap:g}")
        rows.append(report.Row(
            f"{label}. kill -9 of a worker with {got.in_flight:,} jobs in flight (2 workers, "
            f"MAILER_WORKER_CONCURRENCY={crash_recovery.CONCURRENCY}; simulator {crash_recovery.LATENCY_S} s per "
            f"call; the second worker alive; {cap_text}; MAILER_RATE_LIMIT_PER_S=0 and no event callbacks, "
            "as in every row)",
            f"last of them sent {got.last_sent_s:.1f} s after the kill (all claimable again after "
            f"{got.claimable_s:.1f} s); {got.duplicates} duplicates",
            target="< 15 s, claimable < 10 s, 0 duplicates" if cap else "claimable < 10 s, 0 duplicates",
            ok=(got.last_sent_s < 15 or cap is None) and got.claimable_s < 10 and got.duplicates == 0,
        ))
    return rows


def _snapshot(sut: system.System, sizes: Sizes, args: argparse.Namespace, app_id: int) -> list[report.Row]:
    """12: 3b twice, the second time with a REPEATABLE READ snapshot held open all along."""
    plain, held = long_snapshot.measure_both(sut, sizes.emails, app_id, args.concurrency)
    for name, run in (("without a snapshot", plain), ("with a snapshot held", held)):
        _say(f"3b {name}: {run.throughput.per_s:,.0f} emails/s ({run.throughput.window_s:.2f} s); {run.claims} claims, "
             f"p50 {run.claim_p50_ms:.1f} ms, p95 {run.claim_p95_ms:.1f} ms; {run.dead_rows:,} dead job rows; "
             f"snapshot {run.snapshot_s:.0f} s old at the end")
    ratio = held.throughput.per_s / plain.throughput.per_s
    duplicates = plain.throughput.duplicates + held.throughput.duplicates
    return [report.Row(
        f"12. Long snapshot: 3b ({sizes.emails:,} emails, sending alone) with a session holding a REPEATABLE READ "
        f"snapshot ({long_snapshot.READER}) open from before the queueing to the last sent, against the same run "
        "without (MAILER_RATE_LIMIT_PER_S=0 and no event callbacks, as in every row)",
        f"{held.throughput.per_s:,.0f} emails/s; claim p50 {held.claim_p50_ms:.1f} ms, p95 {held.claim_p95_ms:.1f} ms "
        f"({held.dead_rows:,} dead job rows pinned; {held.throughput.duplicates} duplicates)",
        f"without: {plain.throughput.per_s:,.0f} emails/s; claim p50 {plain.claim_p50_ms:.1f} ms, "
        f"p95 {plain.claim_p95_ms:.1f} ms", f"{ratio:.0%}", "≥ 70 % of without",
        ratio >= 0.7 and duplicates == 0,
    )]


def _outage(sut: system.System, args: argparse.Namespace, sizes: Sizes) -> list[report.Row]:
    """10: Postgres stopped and started under the real web and worker processes."""
    run = outage.measure(sut, args.concurrency, sizes.outage_s)
    _say(f"outage: pg_ctl stop {run.stop_s:.2f} s; {run.refused} requests 503 while down; after Postgres was back: "
         f"first 202 {run.first_202_s:.2f} s, its job sent {run.first_sent_s:.2f} s; {run.sent} of {run.queued} "
         f"sent, {run.duplicates} duplicates")
    ok = run.first_202_s < 5 and run.first_sent_s < 5 and run.sent == run.queued and run.duplicates == 0
    return [report.Row(f"10. Outage: PostgreSQL stopped (pg_ctl stop -m fast) for {sizes.outage_s:g} s under the web "
                       f"and {args.worker_processes} workers, then started; from its accepting connections again "
                       "(MAILER_RATE_LIMIT_PER_S=0 and no event callbacks, as in every row)",
                       f"first 202 after {run.first_202_s:.2f} s, its job sent after {run.first_sent_s:.2f} s "
                       f"({run.refused} requests 503 meanwhile; pg_ctl stop {run.stop_s:.2f} s; {run.sent} of "
                       f"{run.queued} sent, {run.duplicates} duplicates)",
                       target="both < 5 s; every job sent once", ok=ok)]


def _pgbouncer(sut: system.System, sizes: Sizes, args: argparse.Namespace, app_id: int,
               runs: dict[str, measure.Throughput]) -> list[report.Row]:
    """13: 3 and 3b again with web and workers through PgBouncer, against 3 and 3b direct in this same run."""
    if TOGETHER not in runs or DRAIN not in runs:  # 3 and 3b not in --only: measured direct right before
        sut.start_workers(args.concurrency)
        _both_runs(sut, sizes, app_id, runs, "", keep_tables=False)
        sut.stop_workers()
    with sut.through_bouncer() as pid:
        before = system.cpu_seconds(pid)
        sut.start_workers(args.concurrency)
        via = _both_runs(sut, sizes, app_id, runs, BOUNCED, keep_tables=False)
        bouncer_cpu = system.cpu_seconds(pid) - before
    direct = {key: runs[key].per_s for key in (TOGETHER, DRAIN)}
    ratios = {key: via[key + BOUNCED].per_s / direct[key] for key in direct}
    duplicates = sum(run.duplicates for run in via.values())
    emails = sum(run.emails for run in via.values())
    _say(f"through PgBouncer: 3 {ratios[TOGETHER]:.0%}, 3b {ratios[DRAIN]:.0%} of direct; PgBouncer's CPU "
         f"{bouncer_cpu:.1f} s ({bouncer_cpu / emails * 1e6:.0f} µs per email)")
    return [report.Row(
        f"13. PgBouncer: 3 and 3b ({sizes.emails:,} emails each) with web and workers through PgBouncer in "
        "transaction mode (pool 20; MAILER_DIRECT_DATABASE_URL direct), against 3 and 3b direct in this run "
        "(MAILER_RATE_LIMIT_PER_S=0 and no event callbacks, as in every row)",
        f"3: {via[TOGETHER + BOUNCED].per_s:,.0f} emails/s, 3b: {via[DRAIN + BOUNCED].per_s:,.0f} emails/s "
        f"({duplicates} duplicates); PgBouncer's CPU {bouncer_cpu:.1f} s ({bouncer_cpu / emails * 1e6:.0f} µs "
        "per email)",
        f"direct: 3 {direct[TOGETHER]:,.0f} emails/s, 3b {direct[DRAIN]:,.0f} emails/s",
        f"3: {ratios[TOGETHER]:.0%}, 3b: {ratios[DRAIN]:.0%}", "both ≥ 80 % of direct, 0 duplicates",
        min(ratios.values()) >= 0.8 and duplicates == 0,
    )]


STEADY_RATE_LIMIT = 2000  # the app's MAILER_RATE_LIMIT_PER_S in the steady scenario: above every rate offered
STEADY_TARGETS = {False: 600, True: 1000}  # emails/s, single and grouped event callbacks


def _steady(sut: system.System, sizes: Sizes, args: argparse.Namespace, app_id: int,
            ) -> tuple[list[report.Row], list[steady.Line]]:
    """14: single messages at a fixed rate with the workers sending and events flowing back, at PostgreSQL's
    defaults and the app's rate limit on (raised through MAILER_RATE_LIMIT_PER_S)."""
    configured = history_runs.shared_buffers(sut)
    history_runs.use_shared_buffers(sut, history_runs.SHARED_BUFFERS[0], _say)  # the default: the README sets none
    lines = []
    try:
        with sut.web_with(MAILER_RATE_LIMIT_PER_S=str(STEADY_RATE_LIMIT)):
            sut.start_workers(args.concurrency)
            for connections, grouped in sizes.steady_lines:
                start = STEADY_TARGETS[grouped] if not args.quick else STEADY_TARGETS[grouped] / 3
                lines.append(steady.line(sut, app_id, connections, grouped, start, sizes.steady_s,
                                         sizes.steady_attempts, _say, sizes.steady_warmup_s))
    finally:
        history_runs.use_shared_buffers(sut, configured, _say)
    rows = []
    for got in lines:
        best = got.best
        target = STEADY_TARGETS[got.grouped]
        events = ("grouped (Mailjet's version 2 callbacks: the events of the moment in one POST)" if got.grouped
                  else "one per POST (Mailjet's default)")
        others = "; ".join(f"{w.offered_per_s:,.0f}/s offered: {w.sent_per_s:,.0f} sent"
                           f"{'' if w.sustained else ' (not sustained)'}" for w in got.tried if w is not best)
        p99, to_mailjet_p99 = best.post_ms.get("99", float("inf")), best.to_mailjet_ms[1]
        rows.append(report.Row(
            f"14. Steady: single messages POSTed at a fixed rate by {got.connections} wrk connections for "
            f"{sizes.steady_s:g} s, workers sending, simulator 100 ms per call posting sent + open events "
            f"{events}; rate limit on (MAILER_RATE_LIMIT_PER_S={STEADY_RATE_LIMIT}), PostgreSQL defaults "
            "(shared_buffers 128MB)",
            f"offered {best.offered_per_s:,.0f}/s: {steady.describe(best)}",
            f"other rates tried: {others}" if others else "",
            target=f"≥ {target:,} emails/s sustained" + ("" if got.grouped else
                                                         ", POST p99 < 50 ms, 202 → Mailjet p99 < 500 ms"),
            ok=best.sustained and best.sent_per_s >= target and best.duplicates == 0 and (
                got.grouped or (p99 < 50 and to_mailjet_p99 < 500)),
        ))
    return rows, lines


def _cpu_per(run: measure.Ingest, unit: str, per_request: int = 1) -> str:
    """'CPU per request: web 1.80 ms, PostgreSQL 1.00 ms' (per email for batches, in µs)."""
    if per_request == 1:
        return (f"CPU per {unit}: web {run.cpu_ms_per_request('web'):.2f} ms, "
                f"PostgreSQL {run.cpu_ms_per_request('postgres'):.2f} ms")
    return (f"CPU per {unit}: web {run.cpu_ms_per_request('web') / per_request * 1e3:.0f} µs, "
            f"PostgreSQL {run.cpu_ms_per_request('postgres') / per_request * 1e3:.0f} µs")


def _end_to_end(sut: system.System, sizes: Sizes, args: argparse.Namespace, app_id: int,
                runs: dict[str, measure.Throughput]) -> list[report.Row]:
    rows: list[report.Row] = []
    wants = set(args.only)
    if "e2e" in wants:
        sut.start_workers(args.concurrency)
        pickups = measure.pickup(sut, sizes.pickups)
        p50, p99 = measure.stats(pickups)
        _say(f"pickup: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        _both_runs(sut, sizes, app_id, runs, "", keep_tables=False)
        rate, applied, seconds = measure.events(sut, EVENT_CLIENTS)
        _say(f"events: {rate:,.0f}/s ({applied:,} in {seconds:.2f} s)")
        _statements("the events")
        rows.append(_with_callbacks(sut, sizes, app_id, runs))
        sut.stop_workers()
        rows.append(report.Row(f"4. Pickup latency, idle system ({sizes.pickups} single jobs; "
                               "MAILER_RATE_LIMIT_PER_S=0, no event callbacks)",
                               f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", target="p50 < 50 ms", ok=p50 < 50))
        rows.append(report.Row(f"5. Events, grouped POSTs of 100 ({EVENT_CLIENTS} clients; posted by the benchmark "
                               "after 3b, not the simulator)",
                               f"{rate:,.0f} events applied/s ({applied:,} in {seconds:.1f} s)",
                               target="≥ 5,000 events/s", ok=rate >= 5000))
    if "naive" in wants:
        sut.reset()
        runs[NAIVE] = slow = measure.naive_end_to_end(sut, sizes.naive_emails, args.concurrency)
        _say(f"naive: {slow.per_s:,.0f} emails/s ({slow.emails:,} in {slow.window_s:.2f} s)")
    slow = runs.get(NAIVE)
    for key, label in ((TOGETHER, "3. End to end: queued through the batch API while the workers send"),
                       (DRAIN, "3b. End to end, sending alone: all queued first (one send_at just after)")):
        if key in runs:
            run = runs[key]
            ratio = run.per_s / slow.per_s if slow else None
            rows.insert(len([r for r in rows if r.name.startswith(("3.", "3b."))]), report.Row(
                f"{label} ({run.emails:,} emails, simulator 100 ms per call; MAILER_RATE_LIMIT_PER_S=0, "
                "no event callbacks)",
                f"{run.per_s:,.0f} emails/s ({run.window_s:.2f} s {_window_of(key)}; {run.duplicates} duplicates)",
                f"naive: {slow.per_s:,.0f} emails/s ({slow.emails:,} in {slow.window_s:.1f} s)" if slow else "",
                f"{ratio:.1f}x" if ratio else "", "≥ 3,000 emails/s and ≥ 10x naive",
                run.per_s >= 3000 and (ratio or 0) >= 10 and run.duplicates == 0))
    return rows


def _with_callbacks(sut: system.System, sizes: Sizes, app_id: int, runs: dict[str, measure.Throughput],
                    ) -> report.Row:
    """3c: 3 again with the simulator posting sent + open for every recipient back to /events, grouped."""
    sut.reset()
    sut.simulator(events_url=f"{sut.web_url}/events", events_auth=system.EVENTS_AUTH, grouped_events=True)
    try:
        runs[CALLBACKS] = run = measure.end_to_end(sut, sizes.emails, app_id)
        applied = measure.wait_for_events(sut, 2 * sizes.emails)
    finally:
        sut.simulator(events_url=None, events_auth=None)
    _say(f"{CALLBACKS}: {run.per_s:,.0f} emails/s ({run.emails:,} in {run.window_s:.2f} s), "
         f"{run.cpu_ms_per_email:.2f} ms CPU per email; {applied:,} events applied")
    return report.Row(
        f"3c. End to end with Mailjet's event callbacks on: 3 while the simulator posts sent and, a second later, "
        f"open for every recipient back to /events, grouped ({sizes.emails:,} emails; MAILER_RATE_LIMIT_PER_S=0)",
        f"{run.per_s:,.0f} emails/s ({run.window_s:.2f} s from the first queued to the last sent; {run.duplicates} "
        f"duplicates; {applied:,} of {2 * sizes.emails:,} events applied in the end)",
        target="≥ 3,000 emails/s", ok=run.per_s >= 3000 and run.duplicates == 0 and applied == 2 * sizes.emails)


TOGETHER = "mailer, queued while sending"
CALLBACKS = "mailer, queued while sending, event callbacks on (grouped)"
DRAIN = "mailer, sending alone"
NAIVE = "naive"
BOUNCED = " through PgBouncer"


def _both_runs(sut: system.System, sizes: Sizes, app_id: int, runs: dict[str, measure.Throughput], suffix: str,
               keep_tables: bool, repeats: int = 1) -> dict[str, measure.Throughput]:
    """3 (the emails due at once, sent while they are being queued), then 3b (all queued first, with one
    send_at just after the queueing: sending alone); each also in `runs`, its key with `suffix`. With
    `repeats`, each is run that many times (alternating) and the median run by emails/s is kept."""
    tries: dict[str, list[measure.Throughput]] = {}
    for _ in range(repeats):
        for key, drain in ((TOGETHER, False), (DRAIN, True)):
            sut.reset(tables=not keep_tables)  # with history the historic jobs stay
            if _PG_STATS:
                system.reset_statement_profile(_PG_STATS)
            run = measure.end_to_end(sut, sizes.emails, app_id, drain=drain)
            tries.setdefault(key + suffix, []).append(run)
            _statements(key + suffix)
            _say(f"{key}{suffix}: {run.per_s:,.0f} emails/s ({run.emails:,} in {run.window_s:.2f} s), "
                 f"{run.cpu_ms_per_email:.2f} ms CPU per email")
    done = {}
    for name, all_runs in tries.items():
        median = sorted(all_runs, key=lambda run: run.per_s)[len(all_runs) // 2]
        # Duplicates of every run count, not only the median's.
        runs[name] = done[name] = dataclasses.replace(median, duplicates=sum(run.duplicates for run in all_runs))
        if repeats > 1:
            _say(f"{name}: median of {repeats}: {done[name].per_s:,.0f} emails/s")
    return done


def _window_of(key: str) -> str:
    return "from the first claim to the last sent" if key == DRAIN else "from the first queued to the last sent"


_PG_STATS = ""  # the database URL when --pg-stats is on


def _statements(what: str) -> None:
    """With --pg-stats: the statements that cost PostgreSQL the most since the last call."""
    if _PG_STATS:
        print(f"\nPostgreSQL statements of {what}:\n{system.statement_profile(_PG_STATS)}\n", flush=True)
        system.reset_statement_profile(_PG_STATS)


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
