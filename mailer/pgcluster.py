"""A private PostgreSQL cluster in a local folder, for `mailer dev`, the tests and the benchmark; and a private
PgBouncer in front of one, in transaction mode, for the tests and the benchmark."""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import time

# initdb and postgres refuse to run as root; as root we run them as this user instead.
UNPRIVILEGED_USERS = ("postgres", "nobody")
# How long pg_ctl waits for the server to start or to stop before it fails (and we raise).
PG_CTL_WAIT_S = 60
# How long PgBouncer may take to listen after it is started, and to exit after SIGTERM.
PGBOUNCER_WAIT_S = 15


class ClusterError(RuntimeError):
    """The private cluster could not be created or started."""


def find_binary(name: str) -> str:
    """Path of a PostgreSQL server program (on PATH or in Debian's versioned folder)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if candidates:
        return candidates[-1]
    raise ClusterError(f"{name} not found: install the PostgreSQL server (e.g. apt-get install postgresql)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Cluster:
    """One PostgreSQL server listening on 127.0.0.1 with trust authentication for `postgres`."""

    base_dir: pathlib.Path  # a folder of its own: the data and the server log live in it
    port: int
    fast_unsafe: bool = False  # fsync off: for throwaway test clusters only
    # A connection that never finishes its start-up (a client gone mid-handshake) holds a server process
    # this long, and a fast shutdown waits for it: Postgres's default is 60 s, far too long for a local
    # cluster with trust authentication.
    authentication_timeout_s: int = 5

    @property
    def data_dir(self) -> pathlib.Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> pathlib.Path:
        return self.base_dir / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """libpq URL of a database in this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster's folder and run initdb, as an unprivileged user when we are root."""
        self._make_data_dir()
        self._run(find_binary("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")

    def init_standby(self, primary: Cluster, slot: str) -> None:
        """Make this cluster a streaming replica of `primary` (not started yet): pg_basebackup -R copies it and
        writes the standby's settings, with a replication slot `slot` (created on the primary) that keeps the
        WAL the replica has not received yet while it is stopped."""
        # initdb's pg_hba.conf lets `postgres` replicate over loopback (trust), and the defaults suit a
        # primary (wal_level replica, 10 WAL senders) and a standby (hot_standby on).
        self._make_data_dir()
        self._run(find_binary("pg_basebackup"), "-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(primary.port),
                  "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-C", "-S", slot, "--no-sync")

    def _make_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # postgres refuses a data folder others can read
        owner = _run_as_user()
        if owner:
            for folder in (self.base_dir, self.data_dir):
                os.chown(folder, owner.pw_uid, owner.pw_gid)
            if not self._reachable_by(owner):
                raise ClusterError(f"{owner.pw_name} cannot reach {self.base_dir}: choose a folder outside /root")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.data_dir}",
                   "-c max_connections=200", f"-c authentication_timeout={self.authentication_timeout_s}s"]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(find_binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                  "-o", " ".join(options), "-w", "-t", str(PG_CTL_WAIT_S), "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait until it is gone; no error if it is not running.

        Raises ClusterError, with pg_ctl's output, if pg_ctl fails (e.g. the server is still running after
        PG_CTL_WAIT_S).
        """
        if (self.data_dir / "postmaster.pid").exists():
            self._run(find_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(PG_CTL_WAIT_S),
                      "stop")

    def ensure_running(self) -> None:
        """Initialise the cluster if needed and start it."""
        if not self.initialized():
            self.init()
        self.start()

    def _reachable_by(self, owner: pwd.struct_passwd) -> bool:
        command = ["runuser", "-u", owner.pw_name, "--", "test", "-w", str(self.base_dir)]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0  # noqa: S603

    def _run(self, *argv: str) -> None:
        owner = _run_as_user()
        command = ["runuser", "-u", owner.pw_name, "--", *argv] if owner else list(argv)
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            output = "\n".join(text.strip() for text in (result.stdout, result.stderr) if text.strip())
            raise ClusterError(f"{' '.join(argv)} failed (exit {result.returncode}): {output}\nserver log:\n{log}")


@dataclasses.dataclass
class Bouncer:
    """Debian's PgBouncer on 127.0.0.1 in front of a Cluster, pooling by transaction, every database by its name."""

    base_dir: pathlib.Path  # a folder of its own, reachable by the unprivileged user: config, log, pid file
    port: int
    server_port: int  # the cluster's
    pool_size: int = 20  # server connections per database (default_pool_size)
    max_client_conn: int = 1000
    # How long a client's query may wait for a server connection (PgBouncer's default, 120 s, would hold a
    # request that long while PostgreSQL is down): MAILER_DB_TIMEOUT_S's default.
    query_wait_timeout_s: int = 5
    # How long PgBouncer waits after a failed server login before it tries again (its default, 15 s, would keep
    # everything away for that long after PostgreSQL is back).
    server_login_retry_s: int = 1

    def url(self, dbname: str = "postgres") -> str:
        """libpq URL of a database through this PgBouncer."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def log_file(self) -> pathlib.Path:
        return self.base_dir / "pgbouncer.log"

    @property
    def pid_file(self) -> pathlib.Path:
        return self.base_dir / "pgbouncer.pid"

    def start(self) -> None:
        """Write the configuration, start PgBouncer in the background and wait until it listens."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "pgbouncer.ini"
        (self.base_dir / "users.txt").write_text('"postgres" ""\n')  # trust, as the cluster: names only
        config.write_text("\n".join([
            "[databases]",
            f"* = host=127.0.0.1 port={self.server_port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1", f"listen_port = {self.port}", "unix_socket_dir =",
            "auth_type = trust", f"auth_file = {self.base_dir / 'users.txt'}",
            "pool_mode = transaction", f"default_pool_size = {self.pool_size}",
            f"max_client_conn = {self.max_client_conn}", f"query_wait_timeout = {self.query_wait_timeout_s}",
            f"server_login_retry = {self.server_login_retry_s}",
            f"logfile = {self.log_file}", f"pidfile = {self.pid_file}", "",
        ]))
        owner = _run_as_user()  # PgBouncer refuses to run as root
        if owner:
            for path in (self.base_dir, *self.base_dir.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        command = [find_pgbouncer(), "-d", str(config)]
        if owner:
            command = ["runuser", "-u", owner.pw_name, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        deadline = time.monotonic() + PGBOUNCER_WAIT_S
        while result.returncode == 0 and time.monotonic() < deadline:
            if _listening(self.port):
                return
            time.sleep(0.05)
        log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        raise ClusterError(f"pgbouncer did not start (exit {result.returncode}): {result.stderr.strip()}\n{log}")

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM: at once, its connections closed) and wait until it is gone."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + PGBOUNCER_WAIT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def find_pgbouncer() -> str:
    """Path of Debian's pgbouncer (in /usr/sbin, which is not on every PATH)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    raise ClusterError("pgbouncer not found: install it (scripts/apt-install pgbouncer; scripts/setup does)")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def reachable_base_dir(preferred: pathlib.Path, fallback_name: str) -> pathlib.Path:
    """`preferred`, unless we are root and the unprivileged user cannot get there (e.g. under /root)."""
    owner = _run_as_user()
    if owner is None:
        return preferred
    # Made first: a folder that does not exist yet is one the probe cannot reach, so every checkout fell
    # back to the one shared folder below.
    preferred.parent.mkdir(parents=True, exist_ok=True)
    probe = ["runuser", "-u", owner.pw_name, "--", "test", "-x", str(preferred.parent.resolve())]
    if subprocess.run(probe, capture_output=True, check=False).returncode == 0:  # noqa: S603
        return preferred
    return pathlib.Path("/tmp") / fallback_name  # noqa: S108  # a folder postgres can reach


def _run_as_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ClusterError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


def _version_key(path: str) -> tuple[int, ...]:
    version = pathlib.Path(path).parts[-3]
    return tuple(int(part) for part in version.split(".") if part.isdigit())
