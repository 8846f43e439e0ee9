"""The connection pool: the only place that opens connections to Postgres."""

from __future__ import annotations

import contextlib
import select
from collections.abc import Iterator

import psycopg
import psycopg_pool

from mailer.config import Settings
from mailer.domain import errors


def create_pool(settings: Settings, *, name: str, max_size: int | None = None) -> psycopg_pool.ConnectionPool:
    """Open a pool in the background, so a process starts even while Postgres is down."""
    pool = psycopg_pool.ConnectionPool(
        settings.require_database_url(),
        name=name,
        min_size=1,
        max_size=max_size or settings.db_pool_size,
        timeout=settings.db_timeout_s,
        # Connections that died with a Postgres restart are replaced on checkout, so every
        # process recovers by itself.
        check=check_idle_connection,
        reconnect_timeout=0,  # keep trying forever rather than give up on the pool
        open=False,
    )
    pool.open(wait=False)
    return pool


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
        with pool.connection(timeout=timeout) as conn:
            yield conn
    except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
        raise errors.DatabaseUnavailable("the database is unavailable; try again shortly") from exc


def retire(pool: psycopg_pool.ConnectionPool) -> None:
    """Have the pool replace its connections, the ones in use (this one) as they come back, with fresh ones.

    For a connection that has read a big row: libpq keeps its input buffer at the size of the largest
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
                conn.isolation_level, conn.read_only = None, False  # the pool's connections' defaults


def ping(pool: psycopg_pool.ConnectionPool) -> None:
    """Raise DatabaseUnavailable unless a trivial query succeeds."""
    with connection(pool) as conn:
        conn.execute("SELECT 1")
