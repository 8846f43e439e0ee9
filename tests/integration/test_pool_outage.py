"""Pools and the worker's wait for the database, across a Postgres outage longer than psycopg_pool's backoff."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import psycopg
import pytest

from mailer import db, pgcluster, worker
from mailer.config import Settings
from mailer.domain import errors

OUTAGE_S = 7  # psycopg_pool's backoff would be at its 4 s step: a retry due ~8 s after the outage began


def outage_settings(cluster: pgcluster.Cluster) -> Settings:
    return Settings(database_url=cluster.url(), db_timeout_s=1, db_connect_timeout_s=2)


def test_the_pool_is_back_at_the_first_checkout_after_a_long_outage(own_cluster: pgcluster.Cluster) -> None:
    pool = db.create_pool(outage_settings(own_cluster), name="test-outage")
    try:
        pool.wait()
        own_cluster.stop()
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            asked = time.monotonic()
            with pytest.raises(errors.DatabaseUnavailable):
                db.ping(pool)
            assert time.monotonic() - asked < 2  # MAILER_DB_TIMEOUT_S, not longer
            time.sleep(0.3)
        own_cluster.start()
        back = time.monotonic()
        db.ping(pool)
        assert time.monotonic() - back < 1
    finally:
        pool.close()


def test_the_async_pool_is_back_at_the_first_checkout_after_a_long_outage(own_cluster: pgcluster.Cluster) -> None:
    async def ride_out() -> float:
        pool = db.create_async_pool(outage_settings(own_cluster), name="test-outage-async", min_size=2, max_size=4)
        await pool.open(wait=True, timeout=5)
        try:
            own_cluster.stop()
            deadline = time.monotonic() + OUTAGE_S
            while time.monotonic() < deadline:
                with pytest.raises(psycopg.OperationalError):  # a dead connection, then PoolTimeout
                    async with pool.connection() as conn:
                        await conn.execute("SELECT 1")
                await asyncio.sleep(0.3)
            own_cluster.start()
            back = time.monotonic()
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            return time.monotonic() - back
        finally:
            await pool.close()

    assert asyncio.run(ride_out()) < 1


def test_the_worker_sees_the_database_back_within_a_probe_interval(own_cluster: pgcluster.Cluster) -> None:
    async def wait_across_an_outage() -> float:
        own_cluster.stop()
        waiting = asyncio.create_task(worker._await_database(outage_settings(own_cluster)))
        await asyncio.sleep(OUTAGE_S)
        assert not waiting.done()
        await asyncio.to_thread(own_cluster.start)
        back = time.monotonic()
        await asyncio.wait_for(waiting, timeout=10)
        return time.monotonic() - back

    assert asyncio.run(wait_across_an_outage()) < worker.PROBE_INTERVAL_S + 1


def test_a_request_already_waiting_when_postgres_comes_back_is_served(own_cluster: pgcluster.Cluster) -> None:
    # psycopg_pool tries one connect per wait: without asking again, this request would wait its whole
    # MAILER_DB_TIMEOUT_S (here 4 s) and get a 503 although Postgres is back after 1 s.
    settings = Settings(database_url=own_cluster.url(), db_timeout_s=4, db_connect_timeout_s=2)
    pool = db.create_pool(settings, name="test-waiting")
    try:
        pool.wait()
        own_cluster.stop()
        with pytest.raises(errors.DatabaseUnavailable):
            db.ping(pool)  # the pool's connection is dead now, and replacing it fails
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            waiting = executor.submit(db.ping, pool)
            time.sleep(1)
            own_cluster.start()
            back = time.monotonic()
            waiting.result(timeout=10)  # no DatabaseUnavailable
        assert time.monotonic() - back < 2, f"served {time.monotonic() - back:.1f} s after Postgres was back"
        assert time.monotonic() - started < 4
    finally:
        pool.close()
