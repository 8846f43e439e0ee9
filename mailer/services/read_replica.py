"""Listings on the read replica (DATABASE_REPLICA_URL) while it answers and keeps up; on the primary otherwise.

The replica's lag is measured against the primary's own WAL position: each check reads where the primary has
written up to, then how far the replica has replayed, and keeps the primary's positions of the last minutes.
A replica that has replayed what the primary had written at some moment has every transaction committed by
then, so it is behind by at most the time since the last such moment (0 when it has replayed all the primary
had written). Only the replica's view (`now() - pg_last_xact_replay_timestamp()`) would count an idle primary's
quiet minutes as lag, and a replica whose WAL receiver lost the primary as caught up. When the primary cannot
be read, the replica's own view is used: no lag while it has replayed all it received, else the age of the last
transaction it replayed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from mailer import db, metrics
from mailer.config import Settings
from mailer.domain import errors
from mailer.store import replica as store

log = logging.getLogger(__name__)

T = TypeVar("T")
PRIMARY, REPLICA = "primary", "replica"
# Reasons a listing goes to the primary (labels of mailer_replica_fallbacks).
UNAVAILABLE, ERROR, LAGGING, NOT_STANDBY, UNKNOWN = metrics.REPLICA_FALLBACK_REASONS
MAX_SAMPLES = 1024  # of the primary's WAL position: with a longer history, the replica's own view decides
CLOSE_WAIT_S = 5.0  # for a check under way, before the replica's pool is closed


@dataclasses.dataclass(frozen=True)
class Health:
    """One judgement of the replica: why it may not serve listings (None: it may), its lag, and when."""

    reason: str | None
    lag_s: float | None
    at: float  # time.monotonic()


class LagClock:
    """The primary's WAL write positions over time, to tell how long ago the primary stood where a replica is."""

    def __init__(self, horizon_s: float) -> None:
        self._horizon_s = horizon_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=MAX_SAMPLES)

    def record(self, at: float, written_bytes: int) -> None:
        """The primary had written `written_bytes` at `at` (time.monotonic(), taken before reading it)."""
        self._samples.append((at, written_bytes))
        while self._samples[0][0] < at - self._horizon_s:
            self._samples.popleft()

    def lag_s(self, now: float, replayed_bytes: int) -> float | None:
        """At most how far behind a replica that has replayed `replayed_bytes` is: 0 when that is all the
        primary had written at the last sample, else the time since the last sample it covers; None when it
        covers no sample kept."""
        newer = False
        for at, written in reversed(self._samples):
            if written <= replayed_bytes:
                return max(now - at, 0.0) if newer else 0.0
            newer = True
        return None


def judge(position: dict[str, Any], *, primary_known: bool, clock: LagClock, now: float, max_lag_s: float) -> Health:
    """Whether a replica at `position` (store.get_replica_position) may serve listings, and its lag."""
    if not position["in_recovery"]:  # promoted, or the URL names a primary: it no longer follows ours
        return Health(NOT_STANDBY, None, now)
    replayed = position["replayed_bytes"]
    lag: float | None = None
    if replayed is not None and primary_known:
        lag = clock.lag_s(now, replayed)
    elif replayed is not None and position["received_bytes"] == replayed:
        lag = 0.0  # the primary could not be read: all the replica received is replayed
    if lag is None:
        lag = position["replay_age_s"]  # None: nothing replayed since the replica started
    if lag is None:
        return Health(UNKNOWN, None, now)
    lag = max(float(lag), 0.0)
    return Health(LAGGING if lag > max_lag_s else None, lag, now)


class ReadRouter:
    """Runs listings on the replica while it may serve them, on the primary otherwise (always, without one).

    The replica is measured at most once per MAILER_REPLICA_CHECK_INTERVAL_S (once per
    MAILER_REPLICA_RETRY_S after it could not be reached), in a thread of its own: no request waits for a
    check. A listing that finds no replica connection within MAILER_REPLICA_TIMEOUT_S, or whose queries fail
    there, is read again on the primary, and the replica is not used until it is checked again.
    """

    def __init__(self, settings: Settings, primary: psycopg_pool.ConnectionPool) -> None:
        self._settings = settings
        self._primary = primary
        self._replica: psycopg_pool.ConnectionPool | None = None
        if settings.database_replica_url:
            self._replica = db.create_pool(
                settings, name="web-replica", conninfo=settings.database_replica_url,
                timeout=settings.replica_timeout_s,
            )
        self._clock = LagClock(horizon_s=2 * settings.replica_max_lag_s + settings.replica_retry_s)
        self._health: Health | None = None
        self._checking = threading.Lock()  # one check at a time; the clock is only touched under it
        self._changing = threading.Lock()  # so that each change of state is logged once

    @property
    def configured(self) -> bool:
        """Whether a replica is configured (DATABASE_REPLICA_URL)."""
        return self._replica is not None

    @property
    def health(self) -> Health | None:
        """The last judgement of the replica (None before the first)."""
        return self._health

    def read(self, work: Callable[[psycopg.Connection], T], *, snapshot: bool = False) -> tuple[T, str]:
        """`work(conn)` on the replica if it may serve now, else on the primary; its result and which served it.

        `snapshot`: all of work's statements read one snapshot (db.snapshot), else one transaction
        (db.connection). An unreachable primary is DatabaseUnavailable, as for any request.
        """
        if self._replica is not None:
            reason = self._reason()
            if reason is None:
                try:
                    with _open(self._replica, snapshot, self._settings.replica_timeout_s) as conn:
                        result = work(conn)
                except errors.DatabaseUnavailable as exc:
                    reason = self._failed(UNAVAILABLE, exc)
                except psycopg.Error as exc:  # e.g. a column whose migration it has not replayed yet
                    reason = self._failed(ERROR, exc)
                else:
                    metrics.replica_read()
                    return result, REPLICA
            metrics.replica_fallback(reason)
        with _open(self._primary, snapshot, None) as conn:
            return work(conn), PRIMARY

    def check(self) -> Health:
        """Measure the replica now (waiting for a check under way), and keep the judgement."""
        with self._checking:
            return self._measure()

    def close(self) -> None:
        """Close the replica's pool (the primary's belongs to the app)."""
        if self._replica is not None:
            acquired = self._checking.acquire(timeout=CLOSE_WAIT_S)
            try:
                self._replica.close()
            finally:
                if acquired:
                    self._checking.release()

    def _reason(self) -> str | None:
        """Why the replica may not serve now (None: it may), starting a check in the background when due."""
        health, now = self._health, time.monotonic()
        due = health is None or now - health.at >= self._check_every(health)
        if due and self._checking.acquire(blocking=False):
            threading.Thread(target=self._check_in_background, name="replica-check", daemon=True).start()
        if health is None:
            return UNKNOWN
        # A lag grows by at most the time since it was measured: after a quiet spell with no listing (no
        # check), the last judgement may no longer hold, and the check just started answers the next one.
        if health.reason is None and (health.lag_s or 0.0) + (now - health.at) > self._settings.replica_max_lag_s:
            return UNKNOWN
        return health.reason

    def _check_every(self, health: Health) -> float:
        if health.reason == UNAVAILABLE:
            return self._settings.replica_retry_s
        return self._settings.replica_check_interval_s

    def _check_in_background(self) -> None:
        try:
            self._measure()
        except Exception:  # a thread of its own: nobody else would see it
            log.exception("read replica: the check failed")
        finally:
            self._checking.release()

    def _measure(self) -> Health:
        """The primary's WAL position, then the replica's; the judgement of both, kept and logged if it changed."""
        assert self._replica is not None  # noqa: S101  # only called with a replica
        timeout = self._settings.replica_timeout_s
        started = time.monotonic()
        primary_known = False
        try:
            with db.autocommit(self._primary, timeout) as conn:
                self._clock.record(started, store.get_primary_wal_position(conn))
            primary_known = True
        except (errors.DatabaseUnavailable, psycopg.Error):
            pass  # the replica's own view decides (see the module's docstring)
        try:
            with db.autocommit(self._replica, timeout) as conn:
                position = store.get_replica_position(conn)
        except (errors.DatabaseUnavailable, psycopg.Error) as exc:
            health = Health(UNAVAILABLE, None, time.monotonic())
            self._keep(health, exc)
            return health
        health = judge(position, primary_known=primary_known, clock=self._clock, now=time.monotonic(),
                       max_lag_s=self._settings.replica_max_lag_s)
        self._keep(health)
        return health

    def _failed(self, reason: str, exc: BaseException) -> str:
        """A listing failed on the replica: not used again until the next check."""
        last = self._health
        self._keep(Health(reason, last.lag_s if last else None, time.monotonic()), exc)
        return reason

    def _keep(self, health: Health, exc: BaseException | None = None) -> None:
        with self._changing:
            before = UNKNOWN if self._health is None else self._health.reason
            self._health = health
        metrics.replica_measured(health.lag_s, health.reason is None)
        if health.reason == before:
            return
        if health.reason is None:
            log.info("read replica: listings read from the replica (lag %.1f s)", health.lag_s or 0.0)
        elif health.reason == LAGGING:
            log.warning("read replica: %.1f s behind the primary (more than MAILER_REPLICA_MAX_LAG_S %g): "
                        "listings read from the primary", health.lag_s or 0.0, self._settings.replica_max_lag_s)
        else:
            cause = f" ({type(exc).__name__}: {str(exc).partition(chr(10))[0]})" if exc is not None else ""
            log.warning("read replica: %s%s: listings read from the primary", health.reason, cause)


@contextlib.contextmanager
def _open(pool: psycopg_pool.ConnectionPool, snapshot: bool, timeout: float | None) -> Iterator[psycopg.Connection]:
    opener = db.snapshot if snapshot else db.connection
    with opener(pool, timeout) as conn:
        yield conn
