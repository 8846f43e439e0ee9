"""The system under test: a private PostgreSQL, gunicorn, worker(s) and the Mailjet simulator, as processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import requests

from mailer import pgcluster
from mailer.services import apps
from mailer.store import migrations

ROOT = pathlib.Path(__file__).resolve().parents[1]
EVENTS_AUTH = "bench:events-secret"
SIM_KEY, SIM_SECRET = "bench-key", "bench-secret"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
# The tables a measurement fills; emptied between measurements so each starts from the same state.
RUN_TABLES = (
    "jobs, recipients, recipient_addresses, job_events, mailjet_events, idempotency_keys, procrastinate_jobs, "
    "procrastinate_periodic_defers"
)


@dataclasses.dataclass
class System:
    """A running mailer for the benchmark: URLs, the API key, and its processes by name."""

    cluster: pgcluster.Cluster
    database_url: str
    web_url: str
    sim_url: str
    api_key: str
    env: dict[str, str]
    log_dir: pathlib.Path
    worker_processes: int
    bouncer: pgcluster.Bouncer | None = None  # started by `running(pgbouncer=True)` or by through_bouncer
    processes: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self, name: str, argv: list[str], **extra_env: str) -> subprocess.Popen[bytes]:
        """Start one named process from the repository root, its output in log_dir/NAME.log."""
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(  # noqa: S603  # our own interpreter and modules
                argv, env={**self.env, **extra_env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        """SIGTERM one process and wait for it (SIGKILL after 20 s)."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def worker_names(self, prefix: str = "worker") -> list[str]:
        return [name for name in self.processes if name.startswith(prefix)]

    def start_workers(self, concurrency: int, **extra_env: str) -> None:
        """mailer's worker processes (`python -m mailer.cli worker`), idle once they listen."""
        started = [self.start(f"worker{i}", [sys.executable, "-m", "mailer.cli", "worker"],
                              MAILER_WORKER_CONCURRENCY=str(concurrency), **extra_env).pid
                   for i in range(self.worker_processes)]

        def registered() -> bool:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM senders WHERE os_pid = ANY(%s) AND retired_at IS NULL",
                                   (started,)).fetchone()
            return bool(row) and row[0] == len(started)  # type: ignore[index]

        # Each has its sender identity once its imports are done (mailer/services/liveness.py); a moment more
        # for Procrastinate's LISTEN. Nothing is queued yet, so nothing is lost by waiting.
        wait_until(registered, 60, "the workers registered as senders", interval=0.2)
        time.sleep(0.5)

    def stop_workers(self, prefix: str = "worker") -> None:
        for name in self.worker_names(prefix):
            self.stop(name)

    def simulator(self, **config: Any) -> dict[str, Any]:
        """Change the simulator's configuration (latency_s, events_url, ...)."""
        response = requests.post(f"{self.sim_url}/_sim/config", json=config, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def reset(self, tables: bool = True) -> None:
        """Empty the tables a measurement fills (unless not `tables`), and the simulator's memory of sends."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            if tables:
                conn.execute(f"TRUNCATE {RUN_TABLES} CASCADE")  # type: ignore[arg-type]  # constant
                conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")  # each measurement starts with the same WAL state
        requests.post(f"{self.sim_url}/_sim/reset", timeout=10).raise_for_status()

    def restart_postgres(self, settings: dict[str, str]) -> None:
        """Restart PostgreSQL with `settings` (ALTER SYSTEM), and the web server with it; workers must be stopped."""
        if self.worker_names():
            raise RuntimeError("stop the workers before restarting PostgreSQL")
        self.stop("web")
        _alter_system(self.database_url, settings)
        self.cluster.stop()
        self.cluster.start()
        self.start_web()

    @contextlib.contextmanager
    def through_bouncer(self) -> Iterator[int]:
        """Web, and workers started inside, through PgBouncer in transaction mode; yields PgBouncer's pid.

        The web server restarts on entry and on exit (with the environment it had); workers must be stopped."""
        if self.worker_names() or self.bouncer is None:
            raise RuntimeError("stop the workers (and have a bouncer) before rerouting the web")
        if not self.bouncer.pid_file.exists():
            self.bouncer.start()
        saved = dict(self.env)
        self.stop("web")
        self.env.update(DATABASE_URL=self.bouncer.url(), MAILER_DIRECT_DATABASE_URL=self.database_url)
        try:
            self.start_web()
            yield int(self.bouncer.pid_file.read_text().split()[0])
        finally:
            self.stop_workers()
            self.stop("web")
            self.env = saved
            self.start_web()

    @contextlib.contextmanager
    def web_with(self, **env: str) -> Iterator[None]:
        """The web server (and workers started inside) with `env` on top; as before on exit.

        Workers must be stopped on entry; those started inside are stopped on exit."""
        if self.worker_names():
            raise RuntimeError("stop the workers before changing the web server's environment")
        saved = dict(self.env)
        self.stop("web")
        self.env.update(env)
        try:
            self.start_web()
            yield
        finally:
            self.stop_workers()
            self.stop("web")
            self.env = saved
            self.start_web()

    def start_web(self) -> None:
        """gunicorn, ready once /readyz answers."""
        self.start("web", [sys.executable, "-m", "gunicorn", "wsgi:app"])
        wait_until(lambda: ready(f"{self.web_url}/readyz"), 60, "web ready")

    def pids(self, names: list[str]) -> list[int]:
        return [self.processes[name].pid for name in names if name in self.processes]

    def postmaster_pid(self) -> int:
        return int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def running(worker_processes: int, web_workers: int, web_threads: int, pg_stats: bool = False,
            pg_settings: dict[str, str] | None = None, pgbouncer: bool = False) -> Iterator[System]:
    """Start PostgreSQL (fsync on), migrate, create an app, start the simulator and gunicorn.

    With `pg_stats`, PostgreSQL also loads pg_stat_statements (for statement_profile); `pg_settings` are
    set with ALTER SYSTEM before the server restarts. With `pgbouncer`, web and workers reach PostgreSQL through
    PgBouncer in transaction mode (DATABASE_URL), with the direct URL beside it (MAILER_DIRECT_DATABASE_URL);
    the benchmark's own connections (resets, counts) stay direct."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    cluster = pgcluster.Cluster(base_dir=base / "pg", port=pgcluster.free_port(), fast_unsafe=False)
    log_dir = base / "logs"
    log_dir.mkdir()
    base.chmod(0o755)  # the postgres user must reach pg/ below it
    cluster.ensure_running()
    system: System | None = None
    bouncer = pgcluster.Bouncer(base_dir=base / "pgbouncer", port=pgcluster.free_port(), server_port=cluster.port)
    try:
        url = cluster.url()
        if pg_settings:
            _alter_system(url, pg_settings)
            cluster.stop()
            cluster.start()
        if pg_stats:
            _load_pg_stat_statements(cluster)
        migrations.migrate(url)
        with psycopg.connect(url) as conn:
            _, api_key = apps.create_app(conn, "bench")
        web_port, sim_port = pgcluster.free_port(), pgcluster.free_port()
        if pgbouncer:
            bouncer.start()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            **({"DATABASE_URL": bouncer.url(), "MAILER_DIRECT_DATABASE_URL": url} if pgbouncer else {}),
            "PORT": str(web_port),
            "MAILJET_API_URL": f"http://127.0.0.1:{sim_port}",
            "MAILJET_API_KEY": SIM_KEY,
            "MAILJET_API_SECRET": SIM_SECRET,
            "MAILER_EVENTS_AUTH": EVENTS_AUTH,
            "MAILER_RATE_LIMIT_PER_S": "0",  # one app sends everything: its request limit would be the bench
            "WEB_CONCURRENCY": str(web_workers),
            "MAILER_WEB_THREADS": str(web_threads),
            "PYTHONUNBUFFERED": "1",
        }
        system = System(cluster, url, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sim_port}", api_key,
                        env, log_dir, worker_processes, bouncer)
        # No --events-url: the send measurements must not share the machine with event callbacks.
        system.start("simulator", [sys.executable, "-m", "mailer.mailjet.simulator", "--port", str(sim_port),
                                   "--api-key", SIM_KEY, "--api-secret", SIM_SECRET, "--latency-ms", "100"])
        system.start("web", [sys.executable, "-m", "gunicorn", "wsgi:app"])
        wait_until(lambda: ready(f"{system.web_url}/readyz") and ready(f"{system.sim_url}/_sim/sends"),
                   60, "web and simulator ready")
        yield system
    except BaseException:
        for log in sorted(log_dir.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        if system is not None:
            system.stop_all()
        bouncer.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _alter_system(url: str, settings: dict[str, str]) -> None:
    """ALTER SYSTEM SET each setting (in effect after a reload or restart)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in settings.items():
            if "." in name:  # a module's setting (auto_explain.*): known only once the module is loaded
                conn.execute(f"LOAD '{name.split('.')[0]}'")  # type: ignore[arg-type]  # our own options
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # type: ignore[arg-type]  # our own options


def _load_pg_stat_statements(cluster: pgcluster.Cluster) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    cluster.stop()
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")  # the statements of triggers too
        conn.execute("SELECT pg_reload_conf()")


def reset_statement_profile(url: str) -> None:
    """Forget what pg_stat_statements has counted so far."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def statement_profile(url: str, top: int = 15) -> str:
    """The statements that took the most PostgreSQL time since the last reset (needs pg_stats).

    Times are wall time on a busy machine; buffers per call (shared hits, each a page visited) say how
    much a call read, whatever the machine was doing meanwhile."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT total_exec_time, calls, rows, shared_blks_hit + shared_blks_read,
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
               FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT %s""", (top,)
        ).fetchall()
    lines = ["| total ms | calls | rows | ms/call | buffers/call | statement |", "|---|---|---|---|---|---|"]
    lines += [f"| {total:,.0f} | {calls:,} | {nrows:,} | {total / calls:.2f} | {buffers / calls:,.0f} | `{text}` |"
              for total, calls, nrows, buffers, text in rows]
    return "\n".join(lines)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not reached within {timeout} s")


def ready(url: str) -> bool:
    """Whether GET `url` answers 200 (False while nothing listens yet)."""
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=1).status_code == 200
    return False


# --- CPU time and memory of processes, from /proc ---------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from the 3rd (state) on; the name may hold spaces


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants, living or reaped, in seconds."""
    tree = _children()
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        fields = _stat(current)
        if fields is None:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat (index 11-14 here): the reaped
        # children's time counts once, in their parent.
        total += sum(int(value) for value in fields[11:15]) / CLOCK_TICK
        stack.extend(tree.get(current, []))
    return total


def peak_rss_mb(pid: int) -> float:
    """The highest resident set size a process reached (VmHWM), in MiB."""
    with contextlib.suppress(OSError):
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def own_cpu_seconds() -> float:
    """CPU of this process (the load generator), including its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclasses.dataclass
class CpuMeter:
    """CPU seconds of named groups of processes over an interval."""

    groups: dict[str, list[int]]
    started: dict[str, float] = dataclasses.field(default_factory=dict)
    wall_started: float = 0.0

    def start(self) -> None:
        self.started = self._read()
        self.wall_started = time.monotonic()

    def stop(self) -> dict[str, float]:
        now = self._read()
        return {name: now[name] - self.started[name] for name in now}

    def _read(self) -> dict[str, float]:
        values = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}
        values["load generator"] = own_cpu_seconds()
        return values
