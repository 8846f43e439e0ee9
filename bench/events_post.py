"""CPU per `POST /events` of one event (Mailjet's default), web and PostgreSQL, at a fixed rate.

    .venv/bin/python bench/events_post.py [--rate 400] [--seconds 10] [--rounds 3] [--grouped 1] [--pg-stats]

Starts the benchmark's system (bench/system.py: PostgreSQL with fsync on, gunicorn with 2 processes of 4
threads; no worker), stores enough sent messages (MessageIDs known) for each round, then wrk offers `--rate` POSTs a
second from 8 connections (a schedule, as the steady scenario does), each its own events as the simulator posts
them: `sent`, then `open`, of one recipient after the other, so that every event is new, matched and moves its
recipient's status. Prints, per round, the CPU of the web processes and of PostgreSQL per POST and per event,
and with `--pg-stats` pg_stat_statements' calls per POST and costliest statements. `--grouped N`: N events per
POST (Mailjet's grouped callbacks), for comparison.

To compare two revisions, run this file in a checkout of each (it measures the checkout it is in):
    git worktree add ../before REV && (cd ../before && .venv/bin/python "$OLDPWD/bench/events_post.py")
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path.cwd() if (pathlib.Path.cwd() / "mailer").is_dir() else pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `mailer` and `bench` of the checkout it runs in (see the docstring)
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402  # after the path fix above

from bench import loadgen, system  # noqa: E402
from mailer.services import queueing  # noqa: E402

CONNECTIONS = 8
FIRST_MESSAGE_ID = 2**58
WARMUP_S = 2.0
PY_SPY = "/opt/prof/bin/py-spy"
OPEN_AFTER = 200  # a recipient's open comes this many events after its sent
MAX_LUA_CONSTANTS = 60_000  # LuaJIT refuses a function with more than 65,536 constants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400.0, help="POSTs offered per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window of each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grouped", type=int, default=1, help="events per POST")
    parser.add_argument("--pg-stats", action="store_true", help="pg_stat_statements' calls and top statements")
    parser.add_argument("--py-spy", metavar="PREFIX",
                        help="py-spy records each web process in the last round (its CPU figures then include "
                             "the sampling) to PREFIX-PID.txt, collapsed stacks of the thread holding the GIL")
    args = parser.parse_args(argv)
    if args.grouped < 1 or args.rate <= 0:
        parser.error("--grouped must be at least 1 and --rate above 0")
    with system.running(0, 2, 4, pg_stats=args.pg_stats) as sut:
        if args.pg_stats:  # how often each statement is planned, and what that costs
            with psycopg.connect(sut.database_url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
                conn.execute("SELECT pg_reload_conf()")
        app_id = _app_id(sut)
        print(f"# {args.rate:g} POSTs/s of {args.grouped} event(s), {args.seconds:g} s, {CONNECTIONS} connections",
              flush=True)
        print("| round | POSTs/s | non-2xx | p50 ms | p99 ms | web µs/POST | postgres µs/POST | web µs/event | "
              "postgres µs/event |\n|---|---|---|---|---|---|---|---|---|", flush=True)
        web, pg = [], []
        for round_number in range(1, args.rounds + 1):
            sut.reset()
            # Enough for each run, and a margin: a run that outlasts its events repeats them (duplicates).
            warm_up = int(args.rate * (WARMUP_S + 1) * args.grouped)
            window = int(args.rate * (args.seconds + 2) * args.grouped)
            events = _events(_recipients(sut, app_id, (warm_up + window) // 2 + 1))
            spy = args.py_spy if round_number == args.rounds else None
            web_s, pg_s, result = _run(sut, events[:warm_up], events[warm_up:], args, spy)
            posts = max(result.requests, 1)
            web.append(web_s / posts * 1e6)
            pg.append(pg_s / posts * 1e6)
            p50, p99 = (result.latency_ms.get(pct, float("nan")) for pct in ("50", "99"))
            print(f"| {round_number} | {result.per_s:,.0f} | {result.non_2xx + result.errors} | {p50:.1f} | {p99:.1f} "
                  "| "
                  f"{web[-1]:,.0f} | {pg[-1]:,.0f} | {web[-1] / args.grouped:,.0f} | {pg[-1] / args.grouped:,.0f} |",
                  flush=True)
            if args.pg_stats:
                print(_calls_per_post(sut.database_url, posts), flush=True)
        print(f"median: web {statistics.median(web):,.0f} µs, postgres {statistics.median(pg):,.0f} µs per POST")
    return 0


def _run(sut: system.System, warm_up: list[str], measured: list[str], args: argparse.Namespace,
         spy: str | None) -> tuple[float, float, loadgen.WrkResult]:
    """A warm-up with the first events, then the measured window with the others: CPU s of web and postgres."""
    url = f"{sut.web_url}/events"
    script = _script(warm_up, args.grouped, args.rate)
    try:
        loadgen.run_wrk_script(url, script, CONNECTIONS, WARMUP_S)
    finally:
        pathlib.Path(script).unlink()
    if args.pg_stats:
        system.reset_statement_profile(sut.database_url)
    script = _script(measured, args.grouped, args.rate)
    try:
        meter = system.CpuMeter({"web": sut.pids(["web"]), "postgres": [sut.postmaster_pid()]})
        spies = [subprocess.Popen([PY_SPY, "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", "200", "--gil",  # noqa: S603
                                   "-f", "raw", "-o", f"{spy}-{pid}.txt"], stdout=subprocess.DEVNULL)
                 for pid in _children(sut.processes["web"].pid)] if spy else []
        meter.start()
        result = loadgen.run_wrk_script(url, script, CONNECTIONS, args.seconds)
        cpu = meter.stop()
        for process in spies:
            process.wait(timeout=60)
    finally:
        pathlib.Path(script).unlink()
    return cpu["web"], cpu["postgres"], result


def _children(pid: int) -> list[int]:
    """The gunicorn worker processes of the arbiter `pid`."""
    return [int(child) for child in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _app_id(sut: system.System) -> int:
    with psycopg.connect(sut.database_url, autocommit=True) as conn:
        return int(conn.execute("SELECT id FROM apps WHERE name = 'bench'").fetchone()[0])  # type: ignore[index]


def _recipients(sut: system.System, app_id: int, count: int) -> list[tuple[int, str, str]]:
    """`count` messages sent (each a recipient with its MessageID): (MessageID, job id, address) each."""
    jobs = []
    for n in range(count):
        message = loadgen.message(n, local=f"events{n}")  # keyed "from", as api/queue.py's new_job_from stores it
        jobs.append(queueing.NewJob(message=message, metadata=message.pop("metadata")))
    with psycopg.connect(sut.database_url) as conn:
        queueing.insert(conn, app_id, jobs, 500)
        rows = conn.execute(
            "UPDATE recipients SET message_id = %s + id, status = 'sent' RETURNING message_id, job_id::text, email",
            (FIRST_MESSAGE_ID,)).fetchall()
    with psycopg.connect(sut.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return rows


def _events(recipients: list[tuple[int, str, str]]) -> list[str]:
    """`sent` of a block of recipients, then their `open`s, block after block: as the simulator posts them, a
    recipient's two events never at the same moment (they would wait for each other's row lock)."""
    now = int(time.time())
    events = []
    for first in range(0, len(recipients), OPEN_AFTER):
        block = list(enumerate(recipients[first:first + OPEN_AFTER], start=first))
        events += [json.dumps({"event": name, "time": now - 60 + n % 50, "MessageID": message_id,
                               "CustomID": job_id, "email": email, "mj_campaign_id": 1, "mj_contact_id": n,
                               "customcampaign": "", "Payload": ""})
                   for name in ("sent", "open") for n, (message_id, job_id, email) in block]
    return events


def _script(events: list[str], grouped: int, rate: float) -> str:
    """A wrk script: `grouped` of these events per request, each thread its own share, at `rate` requests/s."""
    threads = loadgen.wrk_threads(CONNECTIONS)
    if len(events) > MAX_LUA_CONSTANTS:
        raise ValueError(f"{len(events)} events: more than a wrk script holds; offer a lower rate or window")
    auth = "Basic " + base64.b64encode(system.EVENTS_AUTH.encode()).decode()
    head, tail = ("", "") if grouped == 1 else ("[", "]")
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"',
             f'wrk.headers["Authorization"] = {loadgen.lua_string(auth)}',
             "local events = {" + ",".join(loadgen.lua_string(event) for event in events) + "}",
             "local made = 0",
             "function setup(thread) thread:set('tid', made); made = made + 1 end",
             "local next_event = nil",
             "function request()",
             f"  if next_event == nil then next_event = tid * {len(events) // threads} end",
             "  local body = {}",
             f"  for i = 1, {grouped} do body[i] = events[next_event % #events + 1]; next_event = next_event + 1 end",
             f"  return wrk.format(nil, nil, nil, {loadgen.lua_string(head)} .. table.concat(body, ',') .. "
             f"{loadgen.lua_string(tail)})",
             "end"]
    lines += loadgen.lua_fixed_rate(rate, threads)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write("\n".join(lines) + "\n")
    return file.name


def _calls_per_post(url: str, posts: int) -> str:
    """pg_stat_statements since the reset: each statement's calls and plans per POST, and their time."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT calls, plans, total_exec_time, total_plan_time, shared_blks_hit + shared_blks_read,
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 70)
               FROM pg_stat_statements WHERE calls >= %s ORDER BY calls DESC, 3 DESC LIMIT 15""", (posts // 2,)
        ).fetchall()
    return "\n".join(f"    {calls / posts:5.2f} calls {plans / posts:5.2f} plans/POST  {run / calls * 1e3:6.0f} µs run "
                     f"{plan / max(plans, 1) * 1e3:6.0f} µs planning per call {buffers / calls:5.0f} buffers  {text}"
                     for calls, plans, run, plan, buffers, text in rows)


if __name__ == "__main__":
    raise SystemExit(main())
