"""The steady scenario: single messages POSTed at a fixed rate while the workers send and Mailjet's event
callbacks flow back; the highest rate the whole system sustains.

wrk offers the load: N connections share a schedule of one request every 1/rate seconds (a LuaJIT clock
in the script's `delay()`, as wrk2 does), each request a different recipient. Each rate is measured over
a window after a warm-up; it is *sustained* when the emails sent within the window are at least
SUSTAINED_SHARE of those accepted within it and the simulator's queue of events to post has not grown by
more than the same share (the backlog of mail and of events not growing).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pathlib
import tempfile
from collections.abc import Callable

import psycopg
import requests

from bench import loadgen
from bench.system import EVENTS_AUTH, CpuMeter, System, wait_until

WARMUP_S = 3.0
SUSTAINED_SHARE = 0.97
DRAIN_TIMEOUT_S = 180.0
ATTEMPTS = 3  # rates tried per line: the target, then up (sustained) or down (not)
STEP_UP = 1.25
GROUPS = ("web", "workers", "simulator", "postgres", "load generator")


@dataclasses.dataclass(frozen=True)
class Window:
    """One rate, measured: what was offered, accepted, sent, and what it cost."""

    offered_per_s: float  # 0: as fast as wrk can
    seconds: float
    accepted: int
    sent: int
    events_applied: int
    events_pending_growth: int  # the simulator's queue of events to post, end minus start
    post_ms: dict[str, float]  # wrk's latency percentiles ("50", "99")
    non_2xx: int
    to_mailjet_ms: tuple[float, float]  # p50, p99 from the 202 (created_at) to the simulator's receipt
    cpu_s: dict[str, float]
    duplicates: int
    emails_per_call: float = 0.0  # messages per Mailjet send call, warm-up and drain included

    @property
    def sent_per_s(self) -> float:
        return self.sent / self.seconds

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def sustained(self) -> bool:
        events_due = 2 * self.accepted  # sent + open per email
        return (self.accepted > 0 and self.sent >= SUSTAINED_SHARE * self.accepted and self.non_2xx == 0
                and self.events_pending_growth <= (1 - SUSTAINED_SHARE) * events_due)

    def cpu_ms_per_email(self, group: str | None = None) -> float:
        """CPU per email sent in the window: one group's, or all of them."""
        spent = self.cpu_s[group] if group else sum(self.cpu_s.values())
        return spent / max(self.sent, 1) * 1e3


@dataclasses.dataclass(frozen=True)
class Line:
    """Every rate tried for one setting (connections, grouped or single events), and the best sustained."""

    connections: int
    grouped: bool
    tried: list[Window]

    @property
    def best(self) -> Window:
        sustained = [w for w in self.tried if w.sustained]
        return max(sustained, key=lambda w: w.sent_per_s) if sustained else self.tried[-1]


def line(sut: System, app_id: int, connections: int, grouped: bool, start_rate: float, window_s: float,
         attempts: int, say: Callable[[str], None], warmup_s: float = WARMUP_S) -> Line:
    """Rates from `start_rate`, up by STEP_UP while sustained, else down to just under what was sent."""
    sut.simulator(events_url=f"{sut.web_url}/events", events_auth=EVENTS_AUTH, grouped_events=grouped,
                  latency_s=0.1)
    tried: list[Window] = []
    rate = start_rate
    try:
        for _ in range(attempts):
            window = measure(sut, app_id, connections, rate, window_s, warmup_s)
            tried.append(window)
            say(f"steady, {connections} connections, {'grouped' if grouped else 'single'} events, offered "
                f"{rate:,.0f}/s: {describe(window)}")
            if window.sustained:
                if any(not w.sustained for w in tried):
                    break  # the highest sustained below a rate that was not
                rate *= STEP_UP
            else:
                if any(w.sustained for w in tried):
                    break
                rate = max(10.0, 0.95 * _kept_up_with(window))
    finally:
        sut.simulator(events_url=None, events_auth=None, grouped_events=True)
    return Line(connections, grouped, tried)


def _kept_up_with(w: Window) -> float:
    """The rate a window that was not sustained did keep up with: what it sent, and no more than its events
    applied allow (two an email) — but those starve while the web is overrun, so not below 60 % of the rate."""
    return min(w.sent_per_s, max(w.events_applied / w.seconds / 2, 0.6 * w.offered_per_s))


def describe(w: Window) -> str:
    """One window's figures, for the terminal and the table."""
    return (f"{w.sent_per_s:,.0f} emails/s sent, {w.accepted_per_s:,.0f}/s accepted"
            f"{'' if w.sustained else ' (NOT sustained)'}; POST p50 {w.post_ms.get('50', float('nan')):.1f} ms, "
            f"p99 {w.post_ms.get('99', float('nan')):.1f} ms; 202 → Mailjet p50 {w.to_mailjet_ms[0]:.0f} ms, "
            f"p99 {w.to_mailjet_ms[1]:.0f} ms; {w.events_applied / w.seconds:,.0f} events applied/s; "
            f"{w.cpu_ms_per_email():.2f} ms CPU per email; {w.emails_per_call:.1f} emails per Mailjet call; "
            f"{w.duplicates} duplicates")


def measure(sut: System, app_id: int, connections: int, rate: float, window_s: float,
            warmup_s: float = WARMUP_S) -> Window:
    """Warm up at `rate`, then measure a window of `window_s` at it; wait for the backlog to drain after."""
    sut.reset()
    script = _script(sut, connections, rate)
    try:
        _wrk(sut, script, connections, warmup_s)
        meter = CpuMeter({"web": sut.pids(["web"]), "workers": sut.pids(sut.worker_names()),
                          "simulator": sut.pids(["simulator"]), "postgres": [sut.postmaster_pid()]})
        with psycopg.connect(sut.database_url, autocommit=True) as conn:
            started, pending_before = _now(conn), _pending_events(sut)
            meter.start()
            result = _wrk(sut, script, connections, window_s)
            cpu = meter.stop()
            ended, pending_after = _now(conn), _pending_events(sut)
            seconds = (ended - started).total_seconds()
            accepted, sent, applied = conn.execute(
                """SELECT (SELECT count(*) FROM jobs WHERE app_id = %(app)s AND created_at >= %(from)s
                                                         AND created_at < %(to)s),
                          (SELECT count(*) FROM job_events WHERE type = 'sent' AND at >= %(from)s AND at < %(to)s),
                          (SELECT count(*) FROM mailjet_events WHERE applied_at >= %(from)s
                                                                 AND applied_at < %(to)s)""",
                {"app": app_id, "from": started, "to": ended}).fetchone()  # type: ignore[misc]
            _drain(sut, conn, app_id)
            created: dict[str, dt.datetime] = dict(conn.execute(
                "SELECT id::text, created_at FROM jobs WHERE app_id = %s AND created_at >= %s AND created_at < %s",
                (app_id, started, ended)).fetchall())
    finally:
        pathlib.Path(script).unlink()
    sends = requests.get(f"{sut.sim_url}/_sim/sends", timeout=60).json()
    received = {m["custom_id"]: dt.datetime.fromisoformat(m["at"]) for m in sends["messages"]}
    latencies = sorted((received[job] - at).total_seconds() * 1e3 for job, at in created.items() if job in received)
    return Window(
        offered_per_s=rate, seconds=seconds, accepted=accepted, sent=sent, events_applied=applied,
        events_pending_growth=pending_after - pending_before, post_ms=result.latency_ms,
        non_2xx=result.non_2xx + result.errors,
        to_mailjet_ms=(loadgen.percentile(latencies, 50), loadgen.percentile(latencies, 99)),
        cpu_s=cpu, duplicates=sum(count - 1 for count in sends["by_custom_id"].values()),
        emails_per_call=len(sends["messages"]) / max(int(sends["calls"]), 1),
    )


def _now(conn: psycopg.Connection) -> dt.datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index,no-any-return]


def _pending_events(sut: System) -> int:
    return int(requests.get(f"{sut.sim_url}/_sim/sends", params={"summary": 1}, timeout=60).json()["pending_events"])


def _drain(sut: System, conn: psycopg.Connection, app_id: int) -> None:
    """Wait until nothing of the app is left to send and the simulator has posted every event."""
    def drained() -> bool:
        live = conn.execute("SELECT EXISTS (SELECT FROM jobs_live WHERE app_id = %s)", (app_id,)).fetchone()
        return not live[0] and _pending_events(sut) == 0  # type: ignore[index]
    wait_until(drained, DRAIN_TIMEOUT_S, "the steady run's backlog drained", interval=0.5)


def _wrk(sut: System, script: str, connections: int, seconds: float) -> loadgen.WrkResult:
    return loadgen.run_wrk_script(f"{sut.web_url}/queue", script, connections, seconds)


def _script(sut: System, connections: int, rate: float) -> str:
    """A wrk script: a different recipient in each request; with a rate, one request every 1/rate s."""
    threads = loadgen.wrk_threads(connections)
    head, tail = json.dumps(loadgen.message(0, local="steady{N}")).split("steady{N}")
    headers = {"Content-Type": "application/json", **sut.auth}
    lines = ['wrk.method = "POST"']
    lines += [f"wrk.headers[ {loadgen.lua_string(k)} ] = {loadgen.lua_string(v)}" for k, v in headers.items()]
    lines += [
        f"local head, tail = {loadgen.lua_string(head)}, {loadgen.lua_string(tail)}",
        "local made, sent = 0, 0",
        "function setup(thread) thread:set('tid', made); made = made + 1 end",
        "function request()",
        "  sent = sent + 1",
        "  return wrk.format(nil, nil, nil, head .. 'steady' .. tid .. '-' .. sent .. tail)",
        "end",
    ]
    if rate > 0:
        lines += loadgen.lua_fixed_rate(rate, threads)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write("\n".join(lines) + "\n")
    return file.name
