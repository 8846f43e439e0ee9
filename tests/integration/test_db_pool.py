"""The pool's checkout check: a dead connection is replaced, a live one costs no round trip."""

from __future__ import annotations

import time

import psycopg
import psycopg_pool
import pytest

from mailer import db
from mailer.config import Settings


def _backend_pid(pool: object) -> int:
    with db.connection(pool) as conn:  # type: ignore[arg-type]  # a ConnectionPool
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]


def test_a_connection_the_server_ended_is_replaced_on_checkout(database_url: str) -> None:
    pool = db.create_pool(Settings(database_url=database_url), name="test-check", max_size=1)
    try:
        pool.wait()
        first = _backend_pid(pool)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(0.2)  # the server's goodbye reaches the idle socket
        second = _backend_pid(pool)  # no error: the check saw the socket readable and replaced it
        assert second != first
    finally:
        pool.close()


def test_a_live_idle_connection_is_not_queried(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    queried: list[object] = []
    monkeypatch.setattr(psycopg_pool.ConnectionPool, "check_connection", staticmethod(queried.append))
    with psycopg.connect(database_url) as conn:
        db.check_idle_connection(conn)
    assert queried == []


def test_autocommit_runs_each_statement_alone_and_hands_the_connection_back_transactional(database_url: str) -> None:
    pool = db.create_pool(Settings(database_url=database_url), name="test-autocommit", max_size=1)
    try:
        pool.wait()
        with db.autocommit(pool) as conn:
            conn.execute("CREATE TABLE autocommitted (n integer)")
            # No transaction was opened around the statement: it is committed already.
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with psycopg.connect(database_url) as other:
            assert other.execute("SELECT count(*) FROM autocommitted").fetchone() == (0,)
        with db.connection(pool) as conn:  # the same (only) connection, transactional again
            assert conn.autocommit is False
            conn.execute("INSERT INTO autocommitted VALUES (1)")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        pool.close()


def test_autocommit_hands_back_a_connection_whose_statement_failed(database_url: str) -> None:
    pool = db.create_pool(Settings(database_url=database_url), name="test-autocommit-error", max_size=1)
    try:
        pool.wait()
        with pytest.raises(psycopg.errors.UndefinedTable), db.autocommit(pool) as conn:
            conn.execute("SELECT * FROM no_such_table")
        with db.connection(pool) as conn:
            assert conn.autocommit is False
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_snapshot_reads_repeatably_and_hands_the_connection_back_as_it_was(database_url: str) -> None:
    pool = db.create_pool(Settings(database_url=database_url), name="test-snapshot", max_size=1)
    try:
        pool.wait()
        with db.snapshot(pool) as conn:
            assert conn.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE TABLE in_a_snapshot (n integer)")
        with db.connection(pool) as conn:
            # psycopg's defaults, as a new connection has them: read_only False would begin every transaction
            # READ WRITE, which a hot standby (DATABASE_REPLICA_URL) refuses.
            assert (conn.isolation_level, conn.read_only) == (None, None)
            assert conn.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
            conn.execute("CREATE TABLE after_a_snapshot (n integer)")  # and writable again
    finally:
        pool.close()
