"""Our own sessions carry a statement_timeout and an idle_in_transaction_session_timeout (db.session_options)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import psycopg
import pytest

from mailer import db
from mailer.config import Settings
from mailer.domain import errors


def _timeouts(conn: psycopg.Connection) -> tuple[str, str]:
    row = conn.execute("SELECT current_setting('statement_timeout'), "
                       "current_setting('idle_in_transaction_session_timeout')").fetchone()
    assert row is not None
    return row[0], row[1]


def test_the_pools_sessions_have_the_configured_timeouts(settings: Settings) -> None:
    settings = dataclasses.replace(settings, db_statement_timeout_s=42, db_idle_in_transaction_timeout_s=7)
    pool = db.create_pool(settings, name="test")
    try:
        with db.connection(pool) as conn:
            assert _timeouts(conn) == ("42s", "7s")
    finally:
        pool.close()


def test_procrastinates_pool_has_them_too(settings: Settings) -> None:
    settings = dataclasses.replace(settings, db_statement_timeout_s=42, db_idle_in_transaction_timeout_s=7)

    async def read() -> tuple[str, str]:
        pool = db.create_async_pool(settings, name="test", min_size=1, max_size=1)
        await pool.open(wait=True, timeout=10)
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT current_setting('statement_timeout'), "
                                            "current_setting('idle_in_transaction_session_timeout')")
                row = await cursor.fetchone()
                assert row is not None
                return row[0], row[1]
        finally:
            await pool.close()

    assert asyncio.run(read()) == ("42s", "7s")


def test_a_session_idle_in_a_transaction_past_the_timeout_is_ended(settings: Settings) -> None:
    settings = dataclasses.replace(settings, db_idle_in_transaction_timeout_s=1)
    pool = db.create_pool(settings, name="test")
    try:
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout), db.connection(pool) as conn:
            conn.execute("SELECT 1")
            time.sleep(2.5)  # idle in the transaction: Postgres ends the session after 1 s
            conn.execute("SELECT 1")
    finally:
        pool.close()


def test_a_statement_past_the_timeout_is_cancelled(settings: Settings) -> None:
    settings = dataclasses.replace(settings, db_statement_timeout_s=1)
    pool = db.create_pool(settings, name="test")
    try:
        with pytest.raises(errors.DatabaseUnavailable) as raised, db.connection(pool) as conn:
            conn.execute("SELECT pg_sleep(5)")
        assert isinstance(raised.value.__cause__, psycopg.errors.QueryCanceled)  # a 503, as for any slow database
    finally:
        pool.close()


def test_the_urls_own_options_win(settings: Settings) -> None:
    url = settings.require_database_url() + "?options=-c%20statement_timeout%3D3s%20-c%20search_path%3Dpublic"
    settings = dataclasses.replace(settings, database_url=url, db_statement_timeout_s=42)
    pool = db.create_pool(settings, name="test")
    try:
        with db.connection(pool) as conn:
            assert _timeouts(conn)[0] == "3s"
            assert conn.execute("SHOW search_path").fetchone() == ("public",)
    finally:
        pool.close()


def test_a_connection_of_the_cli_has_no_such_limit(settings: Settings) -> None:
    # `mailer db migrate` and the operator's commands may run long statements (an index on a big table).
    with db.connect(settings.require_database_url(), settings) as conn:
        assert _timeouts(conn) == ("0", "0")


def test_a_pooled_database_url_gets_no_startup_options_but_the_direct_connections_do(settings: Settings) -> None:
    # PgBouncer refuses the `options` startup parameter (README, "Long transactions and snapshots").
    pooled = dataclasses.replace(settings, database_url="postgresql://mailer@127.0.0.1:6432/mailer",
                                 direct_database_url=settings.require_database_url())
    assert "options" not in db.session_kwargs(pooled)
    assert "statement_timeout=60000" in db.session_kwargs(pooled, direct=True)["options"]
    replica = "postgresql://mailer@replica/mailer"
    assert "statement_timeout=60000" in db.session_kwargs(pooled, conninfo=replica)["options"]
    assert "statement_timeout=60000" in db.session_kwargs(settings)["options"]  # not pooled
