"""The measurements: each takes a running system and returns its numbers."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

import psycopg
import requests

from bench import loadgen, naive
from bench.system import EVENTS_AUTH, CpuMeter, System, peak_rss_mb, ready, wait_until
from mailer import pgcluster

BATCH = 500  # messages per batch request (the API's maximum)
QUEUE_CLIENTS = 4  # threads that queue the end-to-end emails


@dataclasses.dataclass
class Throughput:
    """An end-to-end run: emails, the window from first queued to last sent, CPU by process group."""

    emails: int
    window_s: float
    cpu_s: dict[str, float]
    wall_s: float
    worker_peak_rss_mb: float
    duplicates: int

    @property
    def per_s(self) -> float:
        return self.emails / self.window_s

    @property
    def cpu_ms_per_email(self) -> float:
        return sum(self.cpu_s.values()) / self.emails * 1e3


def _post_json(system: System, path: str, body: bytes, auth: tuple[str, str] | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json"} if auth else {"Content-Type": "application/json", **system.auth}
    response = requests.post(f"{system.web_url}{path}", data=body, headers=headers, auth=auth, timeout=60)
    if response.status_code >= 300:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
    return response


def _db_now(system: System) -> dt.datetime:
    with psycopg.connect(system.database_url) as conn:
        return conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index,no-any-return]


# --- 1 and 2: ingest ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ingest:
    """An ingest run: wrk's numbers, and the CPU time of the web and PostgreSQL per request."""

    wrk: loadgen.WrkResult
    cpu_s: dict[str, float]

    def cpu_ms_per_request(self, group: str) -> float:
        return self.cpu_s[group] / max(self.wrk.requests, 1) * 1e3


def ingest_single(system: System, seconds: float, clients: int) -> Ingest:
    """Single-message POST /queue from `clients` connections (workers stopped: the API alone)."""
    headers = {"Content-Type": "application/json", **system.auth}
    return _ingest(system, "web", f"{system.web_url}/queue", headers, json.dumps(loadgen.message(1)), clients,
                   seconds, "single ingest")


def ingest_batch(system: System, seconds: float, clients: int) -> Ingest:
    """POST /queue with {"messages": [500 messages]} from `clients` connections."""
    headers = {"Content-Type": "application/json", **system.auth}
    body = json.dumps({"messages": [loadgen.message(i) for i in range(BATCH)]})
    return _ingest(system, "web", f"{system.web_url}/queue", headers, body, clients, seconds, "batch ingest")


def create_receipt_template(system: System) -> str:
    """POST /templates of the receipt template (loadgen.RECEIPT_TEMPLATE); its id."""
    created = _post_json(system, "/templates", json.dumps(loadgen.RECEIPT_TEMPLATE).encode())
    return str(created.json()["id"])


def ingest_batch_templated(system: System, seconds: float, clients: int, template_id: str) -> Ingest:
    """ingest_batch, with each of the 500 messages naming the receipt template with its own variables."""
    headers = {"Content-Type": "application/json", **system.auth}
    body = json.dumps({"messages": [loadgen.templated_message(i, template_id) for i in range(BATCH)]})
    return _ingest(system, "web", f"{system.web_url}/queue", headers, body, clients, seconds, "templated batch ingest")


def ingest_batch_rendered(system: System, seconds: float, clients: int, template_id: str) -> Ingest:
    """ingest_batch_templated's messages rendered beforehand (POST /templates/{id}/render), sent as plain content."""
    headers = {"Content-Type": "application/json", **system.auth}
    messages = []
    for i in range(BATCH):
        templated = loadgen.templated_message(i, template_id)
        rendered = _post_json(system, f"/templates/{template_id}/render",
                              json.dumps({"variables": templated["variables"]}).encode()).json()
        plain = {key: value for key, value in templated.items() if key not in ("template", "variables")}
        messages.append(plain | {part: rendered[part] for part in ("subject", "html", "text") if rendered[part]})
    body = json.dumps({"messages": messages})
    return _ingest(system, "web", f"{system.web_url}/queue", headers, body, clients, seconds, "rendered batch ingest")


def stack_floor(system: System, seconds: float, clients: int) -> Ingest:
    """The same single message POSTed to bench/floor_app.py (one INSERT commit) under mailer's gunicorn settings."""
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        conn.execute(loadgen.RAW_TABLE)
    port = pgcluster.free_port()
    url = f"http://127.0.0.1:{port}"
    system.start("floor", [sys.executable, "-m", "gunicorn", "bench.floor_app:app"], PORT=str(port))
    try:
        wait_until(lambda: ready(f"{url}/ready"), 60, "the floor app ready")
        return _ingest(system, "floor", f"{url}/insert", {"Content-Type": "application/json"},
                       json.dumps(loadgen.message(1)), clients, seconds, "stack floor")
    finally:
        system.stop("floor")


def _ingest(system: System, process: str, url: str, headers: dict[str, str], body: str, clients: int,
            seconds: float, what: str) -> Ingest:
    """wrk against `url`, with the CPU of the named web process (its workers included) and of PostgreSQL."""
    meter = CpuMeter({"web": system.pids([process]), "postgres": [system.postmaster_pid()]})
    meter.start()
    result = loadgen.run_wrk(url, headers, body, clients, seconds)
    cpu = meter.stop()
    _check_wrk(result, what)
    return Ingest(result, cpu)


def _check_wrk(result: loadgen.WrkResult, what: str) -> None:
    if result.non_2xx or result.errors:
        print(f"warning: {what}: {result.non_2xx} non-2xx answers, {result.errors} socket errors", file=sys.stderr)


# --- 3 and 6: end to end -----------------------------------------------------------------------------------


def _cpu_groups(system: System, workers: list[str]) -> dict[str, list[int]]:
    return {"web": system.pids(["web"]), "workers": system.pids(workers),
            "simulator": system.pids(["simulator"]), "postgres": [system.postmaster_pid()]}


def _duplicates(system: System, expected: int) -> int:
    """Messages the simulator accepted beyond one per job (and jobs it never got, as negative)."""
    sends = requests.get(f"{system.sim_url}/_sim/sends", timeout=60).json()
    counts = sends["by_custom_id"]
    if len(counts) != expected:
        print(f"warning: the simulator saw {len(counts)} distinct jobs, not {expected}", file=sys.stderr)
    return sum(count - 1 for count in counts.values())


def _run_window(system: System, workers: Callable[[], list[str]], emails: int, queue_all: Callable[[], None],
                left_sql: str, window_sql: str, timeout: float, held_until: dt.datetime | None = None,
                ) -> Throughput:
    """Queue, wait until nothing is left to send; the window from the database's clocks.

    With `held_until` (the emails' send_at), CPU counts only once everything is queued, and the window
    starts at the first claim."""
    since = _db_now(system)
    meter = CpuMeter(_cpu_groups(system, workers()))
    if held_until is None:
        meter.start()
    queue_all()
    if held_until is not None:
        if _db_now(system) >= held_until:
            print("warning: queueing took longer than the hold: sending overlapped it", file=sys.stderr)
        meter.start()
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        def nothing_left() -> bool:
            dead = [name for name in workers() if system.processes[name].poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited; see {system.log_dir}")
            return not conn.execute(left_sql, {"since": since}).fetchone()[0]  # type: ignore[arg-type,index]

        wait_until(nothing_left, timeout, f"{emails} emails sent")
        cpu = meter.stop()
        wall = time.monotonic() - meter.wall_started
        first, last, count, first_claim = conn.execute(window_sql, {"since": since}).fetchone()  # type: ignore[arg-type,misc]
    if count != emails:
        raise RuntimeError(f"{count} of {emails} emails sent; the others failed (see {system.log_dir})")
    rss = max((peak_rss_mb(pid) for pid in system.pids(workers())), default=0.0)
    start = first_claim if held_until is not None else first
    if held_until is not None:
        wall = (last - start).total_seconds()  # the CPU share over the sending, not the wait for send_at
    return Throughput(emails=count, window_s=(last - start).total_seconds(), cpu_s=cpu, wall_s=wall,
                      worker_peak_rss_mb=rss, duplicates=_duplicates(system, emails))


def end_to_end(system: System, emails: int, app_id: int, drain: bool = False, timeout: float = 900) -> Throughput:
    """Queue `emails` through the batch API (4 clients) and send them all; the workers run all along.

    Without `drain` the emails are due at once, and the window runs from the first job's created_at to
    the last one's sent: queueing and sending share the machine. With `drain` they all carry the same
    send_at, a little after the queueing will be over; the window runs from the first claim (the first
    `sending` audit event) to the last sent, and CPU is counted from the end of the queueing: sending alone.
    """
    held_until = _db_now(system) + dt.timedelta(seconds=2 + emails / 2000) if drain else None
    extra = {"send_at": held_until.isoformat()} if held_until else {}
    bodies = [json.dumps({"messages": [{**loadgen.message(n), **extra}
                                       for n in range(start, min(start + BATCH, emails))]}).encode()
              for start in range(0, emails, BATCH)]

    def queue_all() -> None:
        with concurrent.futures.ThreadPoolExecutor(QUEUE_CLIENTS) as pool:
            list(pool.map(lambda body: _post_json(system, "/queue", body), bodies))

    # app_id is an int from our own database; the partial indexes of the queue answer `left` cheaply
    left = ("SELECT EXISTS (SELECT FROM jobs WHERE status IN ('scheduled', 'queued', 'sending') "  # noqa: S608
            f"AND app_id = {app_id:d} AND created_at >= %(since)s)")
    window = ("SELECT min(created_at), max(updated_at), count(*) FILTER (WHERE status = 'sent'), "  # noqa: S608
              "(SELECT min(at) FROM job_events WHERE type = 'sending' AND at >= %(since)s) FROM jobs "
              f"WHERE app_id = {app_id:d} AND created_at >= %(since)s")
    return _run_window(system, system.worker_names, emails, queue_all, left, window, timeout, held_until)


def naive_end_to_end(system: System, emails: int, concurrency: int, timeout: float = 1800) -> Throughput:
    """The same with the naive design: one Procrastinate job and one Mailjet call per email."""
    naive.prepare(system.database_url)
    for i in range(system.worker_processes):
        system.start(f"naive{i}", [sys.executable, "-m", "bench.naive", "--concurrency", str(concurrency)])
    time.sleep(2.0)
    messages = [loadgen.message(n) for n in range(emails)]

    def queue_all() -> None:
        with psycopg.connect(system.database_url) as conn:
            for start in range(0, emails, BATCH):
                naive.queue(conn, messages[start:start + BATCH])

    left = "SELECT EXISTS (SELECT FROM naive_emails WHERE status = 'queued' AND created_at >= %(since)s)"
    window = ("SELECT min(created_at), max(updated_at), count(*) FILTER (WHERE status = 'sent'), NULL "
              "FROM naive_emails WHERE created_at >= %(since)s")
    try:
        return _run_window(system, lambda: system.worker_names("naive"), emails, queue_all, left, window, timeout)
    finally:
        system.stop_workers("naive")


# --- 4: pickup latency -------------------------------------------------------------------------------------


def pickup(system: System, samples: int) -> list[float]:
    """Idle system, one job at a time: ms from the 202 to the simulator receiving the call (no latency)."""
    system.simulator(latency_s=0.0)
    body = json.dumps(loadgen.message(7)).encode()
    latencies = []
    session = requests.Session()
    try:
        for _ in range(samples):
            time.sleep(0.3)  # idle: the previous job's recording is over
            response = session.post(f"{system.web_url}/queue", data=body,
                                    headers={"Content-Type": "application/json", **system.auth}, timeout=10)
            answered = time.time()
            job_id = response.json()["id"]
            at = wait_until(lambda job_id=job_id: _sim_received(system, job_id), 10, "the simulator got the job",
                            interval=0.02)
            latencies.append((at - answered) * 1e3)
    finally:
        system.simulator(latency_s=0.1)
    return latencies


def _sim_received(system: System, job_id: str) -> float | None:
    sends = requests.get(f"{system.sim_url}/_sim/sends", timeout=10).json()
    for message in sends["messages"]:
        if message["custom_id"] == job_id:
            return dt.datetime.fromisoformat(message["at"]).timestamp()
    return None


# --- 5: events ---------------------------------------------------------------------------------------------


def events(system: System, clients: int, group: int = 100) -> tuple[float, int, float]:
    """POST grouped Mailjet events (delivered, then opened, for every sent recipient); events applied per s."""
    with psycopg.connect(system.database_url) as conn:
        rows = conn.execute("SELECT message_id, job_id, email FROM recipients WHERE message_id IS NOT NULL "
                            "ORDER BY message_id").fetchall()
    now = int(time.time())
    raw = [
        {"event": name, "time": now + offset, "MessageID": message_id, "Message_GUID": f"guid-{message_id}",
         "email": email, "mj_campaign_id": 1, "mj_contact_id": 1, "customcampaign": "",
         "CustomID": str(job_id), "Payload": "", **extra}
        for name, offset, extra in (("sent", 0, {"smtp_reply": "sent (250 2.0.0 OK)"}),
                                    ("open", 1, {"ip": "203.0.113.7", "geo": "FR", "agent": "Mozilla/5.0"}))
        for message_id, job_id, email in rows
    ]
    bodies = [json.dumps(raw[i:i + group]).encode() for i in range(0, len(raw), group)]
    since = _db_now(system)
    user, _, password = EVENTS_AUTH.partition(":")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda body: _post_json(system, "/events", body, auth=(user, password)), bodies))
    elapsed = time.monotonic() - started
    with psycopg.connect(system.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM mailjet_events WHERE applied_at IS NOT NULL AND received_at >= %s",
                           (since,)).fetchone()
        opened = conn.execute("SELECT count(*) FROM recipients WHERE status = 'opened'").fetchone()
    applied = row[0] if row else 0
    if applied != len(raw) or not opened or opened[0] != len(rows):
        print(f"warning: {applied} of {len(raw)} events applied; {opened} recipients opened", file=sys.stderr)
    return applied / elapsed, applied, elapsed


def wait_for_events(system: System, expected: int, timeout: float = 120) -> int:
    """Wait until the simulator has posted every event and `expected` are applied (or the timeout); how many are."""
    def applied() -> int:
        with psycopg.connect(system.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM mailjet_events WHERE applied_at IS NOT NULL").fetchone()
        return int(row[0]) if row else 0

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = requests.get(f"{system.sim_url}/_sim/sends", params={"summary": 1}, timeout=10).json()
        if pending["pending_events"] == 0 and applied() >= expected:
            break
        time.sleep(0.2)
    return applied()


def stats(values: list[float]) -> tuple[float, float]:
    """Median and p99 of samples."""
    return statistics.median(values), loadgen.percentile(sorted(values), 99)


# --- 7: one huge grouped POST /events ----------------------------------------------------------------------


def _web_worker_pids(system: System) -> list[int]:
    """gunicorn's worker processes (the children of the `web` master)."""
    master = system.processes["web"].pid
    children = pathlib.Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def _reset_peak_rss(pid: int) -> None:
    """Start VmHWM again from the current RSS (clear_refs 5, Linux 4.0+)."""
    with contextlib.suppress(OSError):
        pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")


def big_events(system: System, count: int) -> tuple[float, float, float, int]:
    """One grouped POST of `count` events: seconds, web worker RSS before and at peak (MiB), events stored."""
    now = int(time.time())
    raw = [
        {"event": "open", "time": now + i % 600, "MessageID": 10**17 + i, "Message_GUID": f"guid-{i}",
         "email": f"r{i}@example.org", "mj_campaign_id": 1, "mj_contact_id": 1, "customcampaign": "",
         "CustomID": "", "Payload": "", "ip": "203.0.113.7", "geo": "FR", "agent": "Mozilla/5.0"}
        for i in range(count)
    ]
    body = json.dumps(raw).encode()
    del raw
    pids = _web_worker_pids(system)
    for pid in pids:
        _reset_peak_rss(pid)
    before = max((_current_rss_mb(pid) for pid in pids), default=0.0)
    user, _, password = EVENTS_AUTH.partition(":")
    started = time.monotonic()
    response = _post_json(system, "/events", body, auth=(user, password))
    elapsed = time.monotonic() - started
    peak = max((peak_rss_mb(pid) for pid in pids), default=0.0)
    stored = int(response.json()["new"])
    print(f"big events: {len(body) / 2**20:.1f} MiB body, answer {response.json()}", file=sys.stderr)
    return elapsed, before, peak, stored


def _current_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
