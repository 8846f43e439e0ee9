"""The CPU each POST /queue costs the web and PostgreSQL, with the per-app rate limit on, variant by variant.

    .venv/bin/python bench/queue_cost.py [--seconds 8] [--rounds 3] [--variants leases no-leases ...]

Starts a private PostgreSQL and gunicorn as bench/run.py does (no workers: the API alone), then per round runs
every variant in turn: gunicorn restarted with the variant's settings, `wrk` POSTing one message from 8
connections, then batches of 500 from 4, each for `--seconds`; it prints each variant's CPU per request (single)
and per email (batch) of web and PostgreSQL, every round and the median. Variants alternate within a round, so
the load the rest of the machine adds falls on all of them alike.

- `leases`: the rate limit on (MAILER_RATE_LIMIT_PER_S=5000, above what is offered) with its default lease;
- `no-leases`: the same with MAILER_RATE_LIMIT_LEASE_MS=0 (a bucket statement per request, as before leases);
- `marshmallow`: `leases`, with api/fast_message.py off (every message loaded by MessageSchema);
- `limit-off`: MAILER_RATE_LIMIT_PER_S=0 (bench/run.py's row 1).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `mailer` importable from the checkout
    sys.path.insert(0, str(ROOT))

from bench import loadgen, measure, system  # noqa: E402  # after the path fix above

RATE_LIMIT = "5000"  # above any rate this machine can offer: the limit is on, and never refuses
VARIANTS = {
    "leases": ("wsgi:app", {"MAILER_RATE_LIMIT_PER_S": RATE_LIMIT}),
    "no-leases": ("wsgi:app", {"MAILER_RATE_LIMIT_PER_S": RATE_LIMIT, "MAILER_RATE_LIMIT_LEASE_MS": "0"}),
    "marshmallow": ("bench.wsgi_marshmallow_only:app", {"MAILER_RATE_LIMIT_PER_S": RATE_LIMIT}),
    "limit-off": ("wsgi:app", {"MAILER_RATE_LIMIT_PER_S": "0"}),
}
SINGLE_CLIENTS, BATCH_CLIENTS = 8, 4
PY_SPY = "/opt/prof/bin/py-spy"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no-batch", action="store_true", help="single messages only")
    parser.add_argument("--py-spy", type=pathlib.Path, metavar="DIR",
                        help="record the web processes with py-spy during each single run (collapsed stacks in DIR; "
                             "--gil: the thread holding the GIL, so CPU rather than waits)")
    args = parser.parse_args(argv)
    loadgen.ensure_wrk()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
    with system.running(worker_processes=0, web_workers=2, web_threads=4) as sut:
        for round_no in range(1, args.rounds + 1):
            for name in args.variants:
                module, env = VARIANTS[name]
                _restart_web(sut, module, env)
                profile = args.py_spy / f"{name}-{round_no}.txt" if args.py_spy else None
                figures = _measure(sut, args.seconds, not args.no_batch, profile)
                results[name].append(figures)
                print(f"round {round_no} {name}: {_line(figures)}", flush=True)
    print()
    for name, runs in results.items():
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"median of {len(runs)} {name}: {_line(median)}")
    return 0


def _restart_web(sut: system.System, module: str, env: dict[str, str]) -> None:
    sut.stop("web")
    sut.env.pop("MAILER_RATE_LIMIT_LEASE_MS", None)
    sut.env.update(env)
    sut.start("web", [sys.executable, "-m", "gunicorn", module])
    system.wait_until(lambda: system.ready(f"{sut.web_url}/readyz"), 60, "web ready")


def _measure(sut: system.System, seconds: float, batch: bool, profile: pathlib.Path | None) -> dict[str, float]:
    sut.reset()
    headers = {"Content-Type": "application/json", **sut.auth}
    # A warm-up: the key recalled and the pool filled in both processes before the meters start.
    loadgen.run_wrk(f"{sut.web_url}/queue", headers, json.dumps(loadgen.message(0)), SINGLE_CLIENTS, 1)
    spy = None
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen([PY_SPY, "record", "--subprocesses", "--nonblocking", "--gil", "--format", "raw",  # noqa: S603
                                "-d", f"{seconds:g}", "-o", str(profile), "-p", str(sut.processes["web"].pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    single = measure.ingest_single(sut, seconds, SINGLE_CLIENTS)
    if spy is not None:
        spy.wait(timeout=seconds + 30)
    figures = {
        "single req/s": single.wrk.per_s,
        "single web ms": single.cpu_ms_per_request("web"),
        "single pg ms": single.cpu_ms_per_request("postgres"),
    }
    if batch:
        sut.reset()
        run = measure.ingest_batch(sut, seconds, BATCH_CLIENTS)
        emails = max(run.wrk.requests, 1) * measure.BATCH
        figures |= {
            "batch emails/s": run.wrk.per_s * measure.BATCH,
            "batch web us": run.cpu_s["web"] / emails * 1e6,
            "batch pg us": run.cpu_s["postgres"] / emails * 1e6,
        }
    return figures


def _line(figures: dict[str, float]) -> str:
    return "; ".join(f"{key} {value:,.3f}" if "ms" in key else f"{key} {value:,.0f}" for key, value in figures.items())


if __name__ == "__main__":
    sys.exit(main())
