"""Load generators: wrk for HTTP (a Python client cannot keep up on two shared cores), psycopg for the baseline."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from typing import Any

import psycopg

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_LATENCY_LINE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)


def message(n: int, domain: str = "example.org", local: str | None = None) -> dict[str, Any]:
    """A typical transactional message (one recipient, text and HTML, a little metadata)."""
    return {
        "from": {"email": "billing@example.com", "name": "Billing"},
        "to": [{"email": f"{local or f'customer{n}'}@{domain}", "name": f"Customer {n}"}],
        "subject": f"Your invoice #{n}",
        "text": f"Hello, your invoice #{n} of 42.00 EUR is attached. Thank you for your order.",
        "html": f"<p>Hello, your invoice <b>#{n}</b> of 42.00 EUR is attached.</p><p>Thank you.</p>",
        "metadata": {"order_id": n},
    }


# A realistic receipt for the templated batch ingest (row 2b): a subject with the name, about 3 KB of html
# with a loop over the order's 5 items and a few conditionals, a text part, and a JSON Schema of the
# variables (its validation is part of what a message costs).
_HERE = pathlib.Path(__file__).resolve().parent
_ITEM = {
    "type": "object", "required": ["title", "qty", "price"],
    "properties": {"title": {"type": "string", "maxLength": 200}, "variant": {"type": "string"},
                   "qty": {"type": "integer", "minimum": 1}, "price": {"type": "number", "minimum": 0}},
}
RECEIPT_TEMPLATE: dict[str, Any] = {
    "name": "bench-receipt",
    "subject": "Your receipt for order #{{ order_number }}, {{ name }}",
    "html": (_HERE / "receipt.html").read_text(),
    "text": (_HERE / "receipt.txt").read_text(),
    "variables": {
        "type": "object",
        "required": ["name", "order_number", "ordered_on", "items", "total", "currency", "paid"],
        "properties": {
            "name": {"type": "string", "maxLength": 200}, "order_number": {"type": "integer"},
            "ordered_on": {"type": "string"}, "items": {"type": "array", "items": _ITEM, "maxItems": 50},
            "total": {"type": "number"}, "discount": {"type": "number"}, "currency": {"type": "string"},
            "paid": {"type": "boolean"},
            "shipping": {"type": "object", "properties": {"street": {"type": "string"},
                                                          "postcode": {"type": "string"}, "city": {"type": "string"}}},
        },
    },
}


def templated_message(n: int, template_id: str) -> dict[str, Any]:
    """message(n), rendered from the receipt template with its own variables instead of its subject and body."""
    items = [{"title": f"Article {n}-{i}", "qty": 1 + (n + i) % 3, "price": 4.5 + i} for i in range(5)]
    if n % 2:
        items[0]["variant"] = "large"
    total = sum(item["qty"] * item["price"] for item in items)
    variables: dict[str, Any] = {
        "name": f"Customer {n}", "order_number": 100_000 + n, "ordered_on": "2026-12-05", "items": items,
        "total": total - (2.0 if n % 3 == 0 else 0), "currency": "EUR", "paid": n % 4 != 0,
    }
    if n % 3 == 0:
        variables["discount"] = 2.0
    if n % 2 == 0:
        variables["shipping"] = {"street": f"{n} Main Street", "postcode": "12345", "city": "Example City"}
    plain = message(n)
    return {"from": plain["from"], "to": plain["to"], "metadata": plain["metadata"],
            "template": {"id": template_id}, "variables": variables}

def ensure_wrk() -> str:
    """The path of wrk, installed with apt-get (as scripts/ensure-postgres does) when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; installing it with apt-get", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)  # noqa: S603  # apt-get, as scripts/ensure-postgres
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)  # noqa: S603  # apt-get
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return found


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    errors: int
    latency_ms: dict[str, float]  # "50", "75", "90", "99"

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds


def lua_string(value: str) -> str:
    """`value` as a Lua long string literal."""
    return "[==[" + value + "]==]"


def wrk_threads(clients: int) -> int:
    """The threads wrk runs for `clients` connections (the machine's two cores)."""
    return min(clients, 2)


def lua_fixed_rate(rate: float, threads: int) -> list[str]:
    """wrk script lines whose `delay()` keeps one request every 1/rate s across `threads` threads (a LuaJIT clock,
    as wrk2 does): a schedule, not a pause after each answer; slots missed by more than a second are dropped."""
    return [
        'local ffi = require("ffi")',
        "ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_timespec;",
        "           int clock_gettime(int clk_id, bench_timespec *tp); ]]",
        'local clock = ffi.new("bench_timespec")',
        "local function now_ms()",
        "  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC",
        "  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6",
        "end",
        f"local interval_ms = {threads * 1000.0 / rate!r}  -- this thread's share of the rate",
        "local next_at = nil",
        "function delay()",
        "  local now = now_ms()",
        "  if next_at == nil or next_at < now - 1000 then next_at = now end",
        "  local at = next_at",
        "  next_at = next_at + interval_ms",
        "  return math.max(0, at - now)",
        "end",
    ]


def run_wrk(url: str, headers: dict[str, str], body: str, clients: int, seconds: float) -> WrkResult:
    """POST the same body from `clients` connections for `seconds`; wrk's count and latency percentiles."""
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        return run_wrk_script(url, script.name, clients, seconds)
    finally:
        pathlib.Path(script.name).unlink()


def run_wrk_script(url: str, script: str, clients: int, seconds: float) -> WrkResult:
    """wrk with a Lua script from `clients` connections for `seconds`; its count and latency percentiles."""
    argv = [ensure_wrk(), f"-t{wrk_threads(clients)}", f"-c{clients}", f"-d{seconds:g}s", "--latency",
            "--timeout", "10s", "-s", script, url]
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout  # noqa: S603  # wrk
    return parse_wrk(output)


def parse_wrk(output: str) -> WrkResult:
    """The numbers in wrk's report (`--latency`)."""
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
    if not done:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    seconds = float(done.group(2)) * _UNITS[done.group(3)] / 1e3
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    latency = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)] for m in _LATENCY_LINE.finditer(output)}
    return WrkResult(
        requests=int(done.group(1)), seconds=seconds, non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(g) for g in errors.groups()) if errors else 0, latency_ms=latency,
    )


# --- the baseline: single-row INSERT commits straight into PostgreSQL -------------------------------------

RAW_TABLE = """
CREATE TABLE IF NOT EXISTS bench_raw_jobs (
    id uuid PRIMARY KEY, app_id bigint NOT NULL, status text NOT NULL, priority text NOT NULL,
    message jsonb NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb, run_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
RAW_INSERT = (
    "INSERT INTO bench_raw_jobs (id, app_id, status, priority, message, metadata, run_at) "
    "VALUES (%s, 1, 'queued', 'transactional', %s, %s, now())"
)


def _raw_client(url: str, seconds: float, start_at: float, results: Any) -> None:
    body = json.dumps(message(0))
    done, latencies = 0, []
    with psycopg.connect(url, autocommit=True) as conn:  # autocommit: each INSERT is its own commit
        time.sleep(max(0.0, start_at - time.time()))
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            conn.execute(RAW_INSERT, (uuid.uuid4(), body, '{"order_id": 0}'))
            latencies.append(time.monotonic() - now)
            done += 1
    results.put((done, latencies))


def raw_insert_rate(url: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """Single-row INSERT commits per second from `clients` processes (no GIL between them); p50, p99 ms."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RAW_TABLE)
        conn.execute("TRUNCATE bench_raw_jobs")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 2.0  # every client connected before the clock starts
    processes = [context.Process(target=_raw_client, args=(url, seconds, start_at, results)) for _ in range(clients)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join()
    latencies = sorted(latency for _, some in outcomes for latency in some)
    total = sum(done for done, _ in outcomes)
    return total / seconds, percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile of sorted values (nearest rank)."""
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, round(pct / 100 * len(values) + 0.5) - 1))
    return values[rank]
