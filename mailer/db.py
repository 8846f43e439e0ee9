"""The connection pool: the only place that opens connections to Postgres."""

from __future__ import annotations

import contextlib
import select
import time
import traceback
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg_pool

from mailer.config import Settings
from mailer.domain import errors

# psycopg_pool retries a failed connect with a backoff that doubles (1, 2, 4 ... s) for reconnect_timeout
# seconds, and while the attempt that grows the pool backs off, the pool grows no further: after a long
# outage it would come back up to that last delay after Postgres. With 0 a failed connect is tried once more
# at once and then given up; the pool connects again whenever a checkout finds no connection, so it is back
# at the first checkout after Postgres is (a checkout meanwhile waits MAILER_DB_TIMEOUT_S at most).
RECONNECT_TIMEOUT_S = 0.0
# A wait for a pooled connection asks the pool to connect again this often (_checkout).
CHECKOUT_SLICE_S = 0.5
# libpq counts connect_timeout in whole seconds and treats anything under 2 as 2.
DEFAULT_CONNECT_TIMEOUT_S = Settings.db_connect_timeout_s


class Connection(psycopg.Connection[Any]):
    """psycopg's connection, except that a connect that fails or is cancelled leaves no socket open."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Connection:  # type: ignore[override]
        try:
            return super().connect(conninfo, **kwargs)
        except BaseException as exc:
            _close_abandoned_socket(exc)
            raise


class AsyncConnection(psycopg.AsyncConnection[Any]):
    """psycopg's async connection, except that a connect that fails or is cancelled leaves no socket open."""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> AsyncConnection:  # type: ignore[override]
        try:
            return await super().connect(conninfo, **kwargs)
        except BaseException as exc:
            _close_abandoned_socket(exc)
            raise


def _close_abandoned_socket(exc: BaseException) -> None:
    """Drop what a failed connect left in its frames, so that libpq's half-open socket is closed now.

    psycopg keeps the connecting generator, and with it libpq's socket, in the frame of its `connect`, which
    the exception's traceback references. A timeout's exception is in a reference cycle of its own (through
    psycopg's list of attempt errors); a cancellation's outlives the connect wherever a cycle holds it, as
    in Procrastinate's worker, which cancels its LISTEN connect as it stops. Until the garbage collector
    runs, the socket stays open; if Postgres was shutting down, the process it started for that connection
    waits for the start-up packet (`authentication_timeout`, 60 s by default) and `pg_ctl stop` with it.
    """
    traceback.clear_frames(exc.__traceback__)


def connect_kwargs(settings: Settings | None = None, *, direct: bool = False) -> dict[str, Any]:
    """The keyword arguments of every connect: a bounded wait (MAILER_DB_CONNECT_TIMEOUT_S), and on a pooled
    DATABASE_URL (not `direct`) no server-side prepared statements."""
    timeout_s = settings.db_connect_timeout_s if settings else DEFAULT_CONNECT_TIMEOUT_S
    kwargs: dict[str, Any] = {"connect_timeout": timeout_s}
    if settings is not None and settings.database_pooled and not direct:
        # PgBouncer in transaction mode gives each transaction whichever server connection is free: a statement
        # psycopg prepared (it does after a query's 5th run on a connection) is unknown on the next one
        # ("prepared statement "_pg3_0" does not exist"). None: psycopg never prepares.
        # (https://www.psycopg.org/psycopg3/docs/advanced/prepare.html; PgBouncer before 1.21 keeps none.)
        kwargs["prepare_threshold"] = None
    return kwargs


def session_options(
    settings: Settings, *, conninfo: str | None = None, statement_timeout_s: float | None = None, extra: str = ""
) -> str:
    """libpq's `options` of our own sessions (the pools, Procrastinate's LISTEN, the liveness connection): a
    statement_timeout (MAILER_DB_STATEMENT_TIMEOUT_S, or `statement_timeout_s`) and an
    idle_in_transaction_session_timeout (MAILER_DB_IDLE_IN_TRANSACTION_TIMEOUT_S), so that none of them runs
    or holds a transaction, and the snapshot that pins dead rows for vacuum, for long by mistake.

    Startup options, not a SET: one per connection at no cost, and nothing for a transaction to forget. What
    the URL's own `options` say (`conninfo`, DATABASE_URL by default) comes after them, so it wins. A pooler in
    transaction mode (PgBouncer) does not pass startup options on: behind one, session_kwargs leaves them out
    and the role carries them instead (README, "Long transactions and snapshots").
    """
    statement_ms = round((statement_timeout_s or settings.db_statement_timeout_s) * 1000)
    ours = (f"-c statement_timeout={statement_ms} "
            f"-c idle_in_transaction_session_timeout={settings.db_idle_in_transaction_timeout_s * 1000}")
    theirs = psycopg.conninfo.conninfo_to_dict(conninfo or settings.require_database_url()).get("options") or ""
    return " ".join(part for part in (extra, ours, str(theirs)) if part)


def session_kwargs(settings: Settings, *, conninfo: str | None = None, direct: bool = False) -> dict[str, Any]:
    """The keyword arguments of our own sessions' connects (to `conninfo`, DATABASE_URL by default):
    connect_kwargs and session_options, except on a pooled DATABASE_URL, where PgBouncer would refuse the
    startup options (README, "Long transactions and snapshots")."""
    kwargs = connect_kwargs(settings, direct=direct)
    url = conninfo or settings.require_database_url()
    if direct or url != settings.database_url or not settings.database_pooled:
        kwargs["options"] = session_options(settings, conninfo=url)
    return kwargs


def connect(conninfo: str, settings: Settings | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """One connection of its own (not pooled), given up after MAILER_DB_CONNECT_TIMEOUT_S."""
    return Connection.connect(conninfo, **connect_kwargs(settings), **kwargs)


async def connect_async(conninfo: str, settings: Settings | None = None, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """One async connection of its own (not pooled), given up after MAILER_DB_CONNECT_TIMEOUT_S."""
    return await AsyncConnection.connect(conninfo, **connect_kwargs(settings), **kwargs)


async def connect_direct_async(settings: Settings, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """An async connection to MAILER_DIRECT_DATABASE_URL (else DATABASE_URL), for session state: LISTEN."""
    url = settings.require_direct_database_url()
    return await AsyncConnection.connect(url, **session_kwargs(settings, conninfo=url, direct=True), **kwargs)


def create_pool(
    settings: Settings, *, name: str, max_size: int | None = None, conninfo: str | None = None,
    timeout: float | None = None,
) -> psycopg_pool.ConnectionPool[Any]:
    """Open a pool in the background, so a process starts even while Postgres is down.

    `conninfo` (default DATABASE_URL) and `timeout` (the wait for a connection, default MAILER_DB_TIMEOUT_S)
    are for a pool on another server: the read replica's.
    """
    pool = psycopg_pool.ConnectionPool(
        conninfo or settings.require_database_url(),
        connection_class=Connection,
        kwargs=session_kwargs(settings, conninfo=conninfo),
        name=name,
        min_size=1,
        max_size=max_size or settings.db_pool_size,
        timeout=settings.db_timeout_s if timeout is None else timeout,
        # Connections that died with a Postgres restart are replaced on checkout, so every
        # process recovers by itself.
        check=check_idle_connection,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        open=False,
    )
    pool.open(wait=False)
    return pool


def create_async_pool(
    settings: Settings, *, name: str, min_size: int, max_size: int
) -> psycopg_pool.AsyncConnectionPool[Any]:
    """An async pool (not open yet) with the same connect timeout and reconnection rule as create_pool."""
    return psycopg_pool.AsyncConnectionPool(
        settings.require_database_url(),
        connection_class=AsyncConnection,
        kwargs=session_kwargs(settings),
        name=name,
        min_size=min_size,
        max_size=max_size,
        timeout=settings.db_timeout_s,
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        open=False,
    )


def check_idle_connection(conn: psycopg.Connection) -> None:
    """The pool's check on checkout: raise for a dead connection, without a round trip for a live one.

    An idle pooled connection has nothing to read. When its socket is readable, the server wrote to it
    (the FATAL it sends as it shuts down or restarts) or hung up: only then is it asked with a query
    (psycopg_pool's own check), which raises if it is dead, and the pool replaces it.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        psycopg_pool.ConnectionPool.check_connection(conn)


@contextlib.contextmanager
def connection(pool: psycopg_pool.ConnectionPool, timeout: float | None = None) -> Iterator[psycopg.Connection]:
    """A connection in a transaction that commits on success; an unreachable database is a 503.

    `timeout` (seconds) overrides the pool's wait for a free connection (MAILER_DB_TIMEOUT_S).
    """
    try:
        conn = _checkout(pool, pool.timeout if timeout is None else timeout)
        try:
            with conn:  # commits or rolls back; a pooled connection stays open
                yield conn
        finally:
            pool.putconn(conn)
    except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
        raise errors.DatabaseUnavailable("the database is unavailable; try again shortly") from exc


def _checkout(pool: psycopg_pool.ConnectionPool, timeout: float) -> psycopg.Connection:
    """A connection within `timeout`, asking the pool to connect again every CHECKOUT_SLICE_S while it has room.

    psycopg_pool makes one connect attempt per wait (reconnect_timeout 0): a request that started waiting
    while Postgres was down would wait out its whole timeout, and get a 503, after Postgres came back. A full
    pool (every connection busy) is waited for in one go, so that waiters keep their turn.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            return pool.getconn(timeout=max(min(CHECKOUT_SLICE_S, remaining), 0.001))
        except psycopg_pool.PoolTimeout:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            if pool.get_stats().get("pool_size", 0) >= pool.max_size:
                return pool.getconn(timeout=remaining)


def retire(pool: psycopg_pool.ConnectionPool) -> None:
    """Have the pool replace its connections, the ones in use (this one) as they come back, with fresh ones.

    After an outage (the worker, before each run: its idle connections are dead). For a connection that has
    read a big row: libpq keeps its input buffer at the size of the largest
    message it ever received, for as long as the connection lives (16 MiB per pooled connection after a
    14 MB message, measured with tests/e2e/test_worker_memory.py). psycopg_pool has no call to drop one
    connection: closing it ourselves makes the pool log a warning ("discarding closed connection") and count
    a bad return. drain() is its way: idle ones are replaced now, the others when returned, all quietly.
    """
    pool.drain()


@contextlib.contextmanager
def autocommit(pool: psycopg_pool.ConnectionPool, timeout: float | None = None) -> Iterator[psycopg.Connection]:
    """A connection on which each statement is its own transaction; an unreachable database is a 503.

    For single statements (a key check, a token-bucket take): no BEGIN and COMMIT round trips around them.
    """
    with connection(pool, timeout) as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.autocommit = False  # the pool hands out connections that open transactions


@contextlib.contextmanager
def snapshot(pool: psycopg_pool.ConnectionPool, timeout: float | None = None) -> Iterator[psycopg.Connection]:
    """A connection whose statements all read one snapshot (REPEATABLE READ, READ ONLY), for answers built
    from several queries: under READ COMMITTED each would see whatever committed just before it."""
    with connection(pool, timeout) as conn:
        conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        try:
            with conn.transaction():  # ends here, so that the settings can go back
                yield conn
        finally:
            if not conn.closed:
                # psycopg's defaults: with read_only False every transaction would begin READ WRITE, which a
                # hot standby (the read replica) refuses
                conn.isolation_level, conn.read_only = None, None


def ping(pool: psycopg_pool.ConnectionPool) -> None:
    """Raise DatabaseUnavailable unless a trivial query succeeds."""
    with connection(pool) as conn:
        conn.execute("SELECT 1")
