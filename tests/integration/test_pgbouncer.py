"""DATABASE_URL through PgBouncer in transaction mode: what breaks there (prepared statements, LISTEN, session
advisory locks) stays off the pooled URL; the session-scoped parts use MAILER_DIRECT_DATABASE_URL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import procrastinate
import psycopg
import pytest

from mailer import cli, db, pgcluster, worker
from mailer.config import Settings
from mailer.services import liveness
from mailer.store import migrations
from mailer.store import senders as senders_store

CHANNEL = "mailer_pgbouncer_test"


def test_pgbouncer_gives_one_clients_transactions_different_backends_so_prepared_statements_break(
    pooled_settings: Settings,
) -> None:
    url = pooled_settings.require_database_url()
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as a, psycopg.connect(url, autocommit=True) as b:
        first = a.execute("SELECT pg_backend_pid()").fetchone()[0]  # prepared on the server connection it ran on
        with b.transaction():
            # b holds that server connection (PgBouncer reuses the last one freed)
            assert b.execute("SELECT pg_backend_pid()").fetchone()[0] == first
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                a.execute("SELECT pg_backend_pid()")  # another server connection: it knows no such statement


def test_pgbouncer_does_not_keep_a_session_set_for_the_clients_next_transaction(pooled_settings: Settings) -> None:
    url = pooled_settings.require_database_url()
    with psycopg.connect(url, autocommit=True) as a, psycopg.connect(url, autocommit=True) as b:
        a.execute("SET statement_timeout = 1234")  # on the server connection it ran on, which b takes next
        with b.transaction():
            assert b.execute("SHOW statement_timeout").fetchone()[0] == "1234ms"  # b got a's setting
            assert a.execute("SHOW statement_timeout").fetchone()[0] == "0"  # and a lost it


def test_mailers_connections_on_the_pooled_url_never_prepare(pooled_settings: Settings) -> None:
    url = pooled_settings.require_database_url()
    with db.connect(url, pooled_settings, autocommit=True) as a, psycopg.connect(url, autocommit=True) as b:
        assert a.prepare_threshold is None
        pids = set()
        for _ in range(8):  # past psycopg's threshold of 5, each run while b holds the last server connection
            pids.add(a.execute("SELECT pg_backend_pid()").fetchone()[0])
            with b.transaction():
                b.execute("SELECT 1")
                pids.add(a.execute("SELECT pg_backend_pid()").fetchone()[0])
        assert len(pids) >= 2  # it did move between server connections


def test_pools_on_a_pooled_url_never_prepare_and_direct_connections_do(
    pooled_settings: Settings, settings: Settings
) -> None:
    pooled = db.create_pool(pooled_settings, name="pooled", max_size=2)
    plain = db.create_pool(settings, name="plain", max_size=2)
    try:
        with db.connection(pooled) as conn:
            assert conn.prepare_threshold is None
        with db.connection(plain) as conn:
            assert conn.prepare_threshold == 5  # psycopg's default: prepared statements on a direct URL
    finally:
        pooled.close()
        plain.close()
    assert "prepare_threshold" not in db.connect_kwargs(pooled_settings, direct=True)
    # PgBouncer refuses a connection that sends `options` ("unsupported startup parameter: options").
    assert "options" not in db.connect_kwargs(pooled_settings)


async def _notified(connector: procrastinate.PsycopgConnector, settings: Settings, wait_s: float) -> bool:
    """Whether a NOTIFY reaches the connector's LISTEN within `wait_s`."""
    pool = db.create_async_pool(settings, name="procrastinate", min_size=1, max_size=2)
    await pool.open(wait=True, timeout=10)
    got = asyncio.Event()

    async def on_notification(channel: str, payload: str) -> None:
        got.set()

    try:
        await connector.open_async(pool=pool)
        listening = asyncio.create_task(connector.listen_notify(on_notification, [CHANNEL]))
        try:
            direct = settings.require_direct_database_url()
            async with await psycopg.AsyncConnection.connect(direct, autocommit=True) as conn:
                for _ in range(100):  # until the LISTEN ran, on whichever backend
                    cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'")
                    if (await cur.fetchone())[0]:  # type: ignore[index]
                        break
                    await asyncio.sleep(0.05)
                await conn.execute(f"NOTIFY {CHANNEL}, 'x'")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.wait(), wait_s)
            return got.is_set()
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, procrastinate.exceptions.ConnectorException):
                await listening
    finally:
        await pool.close()


def test_the_workers_listen_goes_to_the_direct_url_and_hears_notifications(pooled_settings: Settings) -> None:
    assert asyncio.run(_notified(worker.Connector(pooled_settings), pooled_settings, wait_s=5))
    # Procrastinate's own connector LISTENs on its pool's URL: through PgBouncer the notification is lost.
    assert not asyncio.run(_notified(procrastinate.PsycopgConnector(), pooled_settings, wait_s=1.5))


def test_a_worker_waits_until_the_direct_url_answers_too(pooled_settings: Settings) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/mailer"
    direct_down = dataclasses.replace(pooled_settings, direct_database_url=unreachable)
    with pytest.raises(TimeoutError):  # PgBouncer answers, but the run's LISTEN could not connect
        asyncio.run(asyncio.wait_for(worker._await_database(direct_down), 1.5))
    asyncio.run(asyncio.wait_for(worker._await_database(pooled_settings), 5))


def test_the_liveness_lock_is_taken_on_the_direct_url(pooled_settings: Settings, conn: psycopg.Connection) -> None:
    alive = liveness.Liveness(pooled_settings).start()
    try:
        deadline = time.monotonic() + 5
        while alive.sender_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        sender_id = alive.sender_id
        assert sender_id is not None  # through PgBouncer its connect fails: "unsupported startup parameter"
        backend = conn.execute("SELECT backend_pid FROM senders WHERE id = %s", [sender_id]).fetchone()[0]
        holder = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
            [senders_store.SENDER_LOCK_NAMESPACE, sender_id],
        ).fetchone()[0]
        assert holder == backend
        name = conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", [holder]).fetchone()[0]
        assert name == "mailer-liveness"
    finally:
        alive.stop()


def test_db_migrate_runs_on_the_direct_url(
    pooled_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    used: list[str] = []
    real = migrations.migrate

    def recording(conninfo: str, connect_timeout_s: int = 5, lock_timeout_s: float = 5) -> list[str]:
        used.append(conninfo)
        return real(conninfo, connect_timeout_s, lock_timeout_s)

    monkeypatch.setattr(migrations, "migrate", recording)
    monkeypatch.setenv("DATABASE_URL", pooled_settings.require_database_url())
    monkeypatch.setenv("MAILER_DIRECT_DATABASE_URL", pooled_settings.require_direct_database_url())

    assert cli.main(["db", "migrate"]) == 0

    assert used == [pooled_settings.direct_database_url]  # its advisory lock is a session's
    assert "schema is up to date" in capsys.readouterr().out
