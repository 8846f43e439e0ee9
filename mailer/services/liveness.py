"""Sender liveness: this worker process's sender identity, held by a connection of its own, and the gate that
lets a claim call Mailjet only while the database can still see the claim's sender alive."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import psycopg_pool

from mailer import db, metrics
from mailer.config import SENDER_HEARTBEAT_S, Settings
from mailer.services import recovery
from mailer.store import senders as senders_store

log = logging.getLogger(__name__)

HEARTBEAT_S = SENDER_HEARTBEAT_S  # seen_at is renewed this often
RECONNECT_S = 0.5  # a lost liveness connection is tried again this often
CONNECT_TIMEOUT_S = 2  # libpq's connect_timeout (whole seconds)
TAKEOVER_EVERY_S = 2.0  # each worker runs the takeover check this often (services/recovery.py: take_over)
# A vanished machine or a cut network is noticed by the kernel within about idle + interval * count seconds.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
              "tcp_user_timeout": 10_000}
# The same on the server's side of the socket (per-session settings any role may set): a vanished worker machine
# loses its backend, and its lock, in seconds rather than at the server's own TCP defaults (some two hours).
SERVER_KEEPALIVES = ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
                     " -c tcp_user_timeout=10000")

_current: Liveness | None = None


class SenderUnavailable(Exception):
    """This process has no sender the database sees alive: it may claim nothing now."""


class Liveness:
    """One sender identity at a time, renewed every second by a daemon thread on its own connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._id: int | None = None
        self._held: int | None = None  # the identity whose lock the connection holds (kept after abandon)
        self._in_flight: dict[int, dict[object, float]] = {}  # claims in flight (their start), by identity
        self._seen = -float("inf")  # time.monotonic() before the last successful heartbeat was sent
        self._reachable_since: float | None = None  # time.monotonic() the connection was made, while it lasts
        self._overdue_warned = False
        self._conn: psycopg.Connection | None = None
        self._stopping = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="mailer-liveness", daemon=True)

    def start(self) -> Liveness:
        """Register (or fail to, while the database is away: the thread keeps trying) and start the heartbeat."""
        try:
            self._connect()
        except psycopg.Error as exc:  # the database away: the thread keeps trying
            log.warning("sender liveness: cannot register yet (%s)", type(exc).__name__)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the heartbeat and close the connection (its lock goes with it)."""
        self._stopping.set()
        self._thread.join(timeout=CONNECT_TIMEOUT_S + HEARTBEAT_S + 1)
        with self._lock:
            self._id = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def sender_id(self) -> int | None:
        """The current identity, if any."""
        with self._lock:
            return self._id

    def healthy(self, sender_id: int) -> bool:
        """Whether a claim made by `sender_id` may start a Mailjet call now: it is still this process's identity
        and the heartbeat succeeded within half the reconnect grace, so no takeover can have begun."""
        with self._lock:
            fresh = time.monotonic() - self._seen < self._settings.send_reconnect_grace_s / 2
            return self._id == sender_id and fresh

    def wait_healthy(self, timeout_s: float) -> int:
        """The identity to claim with, once healthy (within `timeout_s`); SenderUnavailable otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                fresh = time.monotonic() - self._seen < self._settings.send_reconnect_grace_s / 2
                if self._id is not None and fresh:
                    return self._id
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SenderUnavailable("this worker's liveness connection to the database is down")
                self._changed.wait(min(remaining, RECONNECT_S))

    @contextlib.contextmanager
    def in_flight(self, sender_id: int) -> Iterator[None]:
        """Count a claim of `sender_id` as in flight while the block runs (and since when)."""
        token = object()
        with self._lock:
            self._in_flight.setdefault(sender_id, {})[token] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                del self._in_flight[sender_id][token]
                if not self._in_flight[sender_id]:
                    del self._in_flight[sender_id]

    def reachable_for(self) -> float:
        """How long the liveness connection has been up without a break (0 while it is down)."""
        with self._lock:
            since = self._reachable_since
        return 0.0 if since is None else time.monotonic() - since

    def abandon(self, sender_id: int) -> None:
        """Give up identity `sender_id` (a claim of it could not be recorded): it claims no more, and its session
        ends once none of its other claims is in flight (their calls may not race the takeover's lookups), so
        the takeover finds it dead and requeues its claims; a new identity follows."""
        with self._lock:
            if self._id == sender_id:
                self._id = None
        log.warning("sender %d gives up its identity: a claim's results could not be recorded", sender_id,
                    extra={"sender_id": sender_id})

    def _run(self) -> None:
        while not self._stopping.wait(HEARTBEAT_S if self._conn is not None else RECONNECT_S):
            try:
                if self._conn is not None and self._abandoned_and_idle():
                    self._drop_connection()  # the session ends, and the sender's lock with it
                if self._conn is None:
                    self._connect()
                else:
                    self._renew()
            except psycopg.Error as exc:
                log.warning("sender liveness connection lost (%s); reconnecting", type(exc).__name__)
                self._drop_connection()
            except Exception:  # a thread that dies would leave the gate closed for good
                log.exception("sender liveness: unexpected error")
                self._drop_connection()

    def _abandoned_and_idle(self) -> bool:
        with self._lock:
            return self._id is None and not self._in_flight.get(self._held or 0)

    def _connect(self) -> None:
        # The direct URL: a session advisory lock through PgBouncer in transaction mode would stay on a server
        # connection that the pooler then lends to others, and this session's next statements land elsewhere.
        options = db.session_options(self._settings, conninfo=self._settings.require_direct_database_url(),
                                     statement_timeout_s=self._settings.db_timeout_s, extra=SERVER_KEEPALIVES)
        conninfo = psycopg.conninfo.make_conninfo(
            self._settings.require_direct_database_url(), connect_timeout=CONNECT_TIMEOUT_S,
            application_name="mailer-liveness", options=options, **KEEPALIVES,
        )
        t0 = time.monotonic()  # seen_at is the server's now() at the statement's start, no earlier than this
        # db.Connection: a connect that fails leaves no half-open socket for Postgres to wait on at shutdown.
        conn: psycopg.Connection = db.Connection.connect(conninfo, autocommit=True)
        try:
            sender_id = self._resume(conn) if self._id is not None else None
            if sender_id is None:
                sender_id = senders_store.register_sender(conn, host=socket.gethostname(), os_pid=os.getpid())
                log.info("registered as sender %d", sender_id, extra={"sender_id": sender_id})
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._conn, self._id, self._held, self._seen = conn, sender_id, sender_id, t0
            self._reachable_since = t0
            self._changed.notify_all()

    def _resume(self, conn: psycopg.Connection) -> int | None:
        """Keep the current identity on a new connection if its lock can be had and it was not retired."""
        old = self._id
        if old is None:
            return None
        locked = senders_store.try_lock_sender(conn, sender_id=old)
        # Our earlier backend may still hold it (the server has not noticed that connection is gone).
        if not locked and (stale := senders_store.stale_sender_backend(conn, sender_id=old)) is not None:
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                senders_store.terminate_sender_backend(conn, sender_id=old, pid=stale)
            for _ in range(10):
                time.sleep(0.05)
                if locked := senders_store.try_lock_sender(conn, sender_id=old):
                    break
        if locked and senders_store.resume_sender(conn, sender_id=old):
            log.info("sender %d reconnected", old, extra={"sender_id": old})
            return old
        if locked:
            senders_store.unlock_sender(conn, sender_id=old)
        log.warning("sender %d was taken over while its connection was down; registering anew", old,
                    extra={"sender_id": old})
        return None

    def _renew(self) -> None:
        # An abandoned identity stays alive to the database while its last claims are in flight.
        conn, sender_id = self._conn, self._held
        if conn is None or sender_id is None:
            return
        if self._overdue(sender_id):  # not renewed: the lease runs out, and the takeover retires it
            if senders_store.sender_active(conn, sender_id=sender_id):
                return
        else:
            t0 = time.monotonic()
            if senders_store.renew_sender(conn, sender_id=sender_id):
                with self._lock:
                    self._seen = t0
                return
        log.warning("sender %d was retired by a takeover; registering anew", sender_id,
                    extra={"sender_id": sender_id})
        senders_store.unlock_sender(conn, sender_id=sender_id)
        with self._lock:
            self._id = None
        self._drop_connection()

    def _overdue(self, sender_id: int) -> bool:
        """Whether a claim of `sender_id` has run past the longest a live claim takes (Settings.send_claim_bound_s):
        hung (a response dripping in, a lock wait, a bug). The lease then runs out and the takeover applies."""
        with self._lock:
            starts = self._in_flight.get(sender_id, {}).values()
            overdue = bool(starts) and time.monotonic() - min(starts) > self._settings.send_claim_bound_s
            warn, self._overdue_warned = overdue and not self._overdue_warned, overdue
        if warn:
            log.warning("sender %d stops renewing its lease: a claim has run longer than %.0f s (hung); it is taken "
                        "over once MAILER_SEND_LEASE_S passes", sender_id, self._settings.send_claim_bound_s,
                        extra={"sender_id": sender_id})
            metrics.sender_claim_overdue()
        return overdue

    def _drop_connection(self) -> None:
        with self._lock:
            conn, self._conn, self._held, self._reachable_since = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class TakeoverLoop:
    """A daemon thread that runs the takeover check every TAKEOVER_EVERY_S, on the pool, once this process's
    liveness connection has been up for the reconnect grace without a break: then the database has been reachable
    for a whole grace (after a crash, a restart or a failover too), time enough for every live worker, which
    reconnects the same way, to take its lock back before anyone is judged dead."""

    def __init__(self, pool: psycopg_pool.ConnectionPool, settings: Settings, liveness: Liveness) -> None:
        self._pool, self._settings, self._liveness = pool, settings, liveness
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailer-takeover", daemon=True)

    def start(self) -> TakeoverLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self._settings.db_timeout_s + TAKEOVER_EVERY_S)

    def _run(self) -> None:
        while True:
            try:
                # Not before: a live worker may still be taking its lock back.
                if self._liveness.reachable_for() >= self._settings.send_reconnect_grace_s:
                    with db.connection(self._pool) as conn:
                        recovery.take_over(conn, self._settings)
            except Exception as exc:  # the database away: the next round tries again
                log.warning("sender takeover check failed (%s: %s)", type(exc).__name__, exc)
            if self._stopping.wait(TAKEOVER_EVERY_S):
                return


def current() -> Liveness:
    """This process's liveness (started by the worker); SenderUnavailable when none runs."""
    if _current is None:
        raise SenderUnavailable("no sender liveness runs in this process (mailer.services.liveness.running)")
    return _current


@contextlib.contextmanager
def running(settings: Settings, pool: psycopg_pool.ConnectionPool | None = None) -> Iterator[Liveness]:
    """This process's sender for the duration (and, given a pool, the takeover check every 2 s)."""
    global _current
    liveness = Liveness(settings).start()
    takeover = TakeoverLoop(pool, settings, liveness).start() if pool is not None else None
    _current = liveness
    try:
        yield liveness
    finally:
        _current = None
        if takeover is not None:
            takeover.stop()
        liveness.stop()
